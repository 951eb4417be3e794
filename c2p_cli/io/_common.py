"""What every reader shares: the Geometry result, the parse error, text and array helpers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Geometry:
    """What a file holds: vertices (float64 [V, 3]) and, for meshes, triangles (int64 [F, 3])."""

    vertices: np.ndarray
    faces: np.ndarray | None = None


class _ParseError(Exception):
    """A format problem; `_load` turns it into InputFileError(path, message)."""


def _short(e: Exception, limit: int = 160) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if b"\x00" in data[:4096]:
        raise _ParseError(f"looks binary, not a text {path.suffix.lower()[1:].upper()} file")
    return data.decode("utf-8-sig", errors="replace")


def _take_xyz(arr: np.ndarray, what: str) -> np.ndarray:
    if arr.dtype.kind not in "fiub":
        raise _ParseError(f"{what} has dtype {arr.dtype} — need numbers")
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2 or arr.shape[1] < 3:
        raise _ParseError(f"{what} has shape {arr.shape} — need N x 3 or more columns")
    if arr.shape[0] == 0:
        raise _ParseError("no points")
    return np.asarray(arr[:, :3], dtype=np.float64)


def _fan(polys: list[list[int]]) -> np.ndarray:
    """Triangulate polygons (vertex index lists) as fans around their first vertex."""
    tris = [(p[0], p[i], p[i + 1]) for p in polys if len(p) >= 3 for i in range(1, len(p) - 1)]
    return np.asarray(tris, dtype=np.int64).reshape(-1, 3)


def _triangle_areas(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Triangle areas up to one common factor (vertices are scaled by their largest magnitude so
    that huge coordinates cannot overflow): fine for area weights and for "is the area zero"."""
    v = np.asarray(v, dtype=np.float64)
    magnitude = np.abs(v).max() if len(v) else 0.0
    if np.isfinite(magnitude) and magnitude > 0:
        v = v / magnitude
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    return 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)


_BOM = b"\xef\xbb\xbf"


def _plural(name: str) -> str:
    return {"vertex": "vertices", "face": "faces"}.get(name, name + "s")
