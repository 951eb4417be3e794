"""STL meshes, ASCII and binary."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ._common import Geometry, _ParseError

_STL_VERTEX = re.compile(rb"vertex\s+(\S+)\s+(\S+)\s+(\S+)")


def _read_stl(path: Path) -> Geometry:
    data = path.read_bytes()
    n = int(np.frombuffer(data, dtype="<u4", count=1, offset=80)[0]) if len(data) >= 84 else 0
    if len(data) >= 84 and len(data) == 84 + 50 * n:
        return _stl_binary(data, n)
    if data.lstrip().startswith(b"solid"):
        found = _STL_VERTEX.findall(data)
        if not found and len(data) >= 84 and len(data) >= 84 + 50 * n:
            # binary STLs often start their 80-byte header with "solid" too; trailing bytes are allowed
            return _stl_binary(data, n)
        if not found:
            raise _ParseError("ASCII STL holds no 'vertex' lines")
        if len(found) % 3:
            raise _ParseError(f"ASCII STL holds {len(found)} vertices, not a multiple of 3")
        verts = np.asarray(found, dtype=np.float64)
        return Geometry(verts, np.arange(len(verts), dtype=np.int64).reshape(-1, 3))
    if len(data) < 84:
        raise _ParseError("not an STL file (too short for a binary STL, no 'solid' keyword)")
    n = int(np.frombuffer(data, dtype="<u4", count=1, offset=80)[0])
    held = (len(data) - 84) // 50
    raise _ParseError(f"truncated binary STL: header says {n} triangles, file holds {held}")


def _stl_binary(data: bytes, n: int) -> Geometry:
    if n == 0:
        raise _ParseError("no points (binary STL with 0 triangles)")
    dt = np.dtype([("normal", "<f4", (3,)), ("v", "<f4", (3, 3)), ("attr", "<u2")])
    arr = np.frombuffer(data, dtype=dt, count=n, offset=84)
    verts = arr["v"].reshape(-1, 3).astype(np.float64)
    return Geometry(verts, np.arange(len(verts), dtype=np.int64).reshape(-1, 3))
