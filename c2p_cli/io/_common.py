"""What every reader shares: the source being read with its limits, the Geometry result, the parse
error, bounded reads, vectorised fan triangulation and chunked triangle areas.

Every reader follows the same rules, because any file may lie: read the header first (a bounded
number of bytes), check every declared count against the file's size and against `max_points`
before allocating anything, then read the body in chunks into arrays sized from those checked
counts. Nothing the file says reaches a C or C++ parser unchecked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .. import defaults

DEFAULT_MAX_POINTS = defaults.MAX_POINTS
DEFAULT_BIN_COLUMNS = defaults.BIN_COLUMNS
# Bytes read at a time from a body: bounds the memory a reader needs on top of its result.
CHUNK_BYTES = 1 << 20
# Headers (PLY, PCD, OFF counts...) longer than this are not headers.
MAX_HEADER_BYTES = 1 << 20


@dataclass
class Geometry:
    """What a file holds: vertices (float32 or float64 [V, 3], the precision the file stores; text
    formats give float64) and, for meshes, triangles (int64 [F, 3])."""

    vertices: np.ndarray
    faces: np.ndarray | None = None


class _ParseError(Exception):
    """A format problem; `_load` turns it into InputFileError(path, message)."""


@dataclass(frozen=True)
class _Source:
    """The file being read, its size (taken once, before reading) and the caller's limits."""

    path: Path
    size: int
    max_points: int = DEFAULT_MAX_POINTS
    bin_columns: int = DEFAULT_BIN_COLUMNS

    def open(self) -> BinaryIO:
        return open(self.path, "rb")

    @property
    def kind(self) -> str:
        return self.path.suffix.lower()[1:].upper()

    def check_count(self, n: int, what: str = "points", limit: int | None = None) -> int:
        """A declared count: not negative, not above `max_points` (or `limit`)."""
        limit = self.max_points if limit is None else limit
        if n < 0:
            raise _ParseError(f"header declares a negative number of {what} ({n})")
        if n > limit:
            raise _ParseError(f"header declares {n} {what}, more than the limit of {limit} (max_points)")
        return n

    def check_fits(self, n: int, min_bytes: int, available: int, what: str = "points") -> None:
        """`n` items of at least `min_bytes` each must fit in the `available` bytes left in the file
        (the last text line may lack its newline: one byte of slack)."""
        if n * min_bytes > available + 1:
            held = available // max(min_bytes, 1)
            raise _ParseError(
                f"header declares {n} {what}, but the {available} bytes after the header can hold at most {held}"
            )


def _short(e: Exception | str, limit: int = 160) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _quote(raw: bytes | str, limit: int = 60) -> str:
    """A piece of the file, shown in a message: one line, bounded, printable."""
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", errors="replace")
    return repr(_short(raw, limit))


def _read_head(fh: BinaryIO, end: re.Pattern[bytes], what: str, limit: int = MAX_HEADER_BYTES) -> tuple[bytes, int]:
    """Read a header a block at a time until `end` matches: (the bytes read so far, where the
    match ends). A file without one costs at most `limit` bytes."""
    buf = b""
    while True:
        block = fh.read(65536)
        buf += block
        m = end.search(buf)
        if m is not None and (m.end() < len(buf) or not block):
            return buf, m.end()
        if not block:
            raise _ParseError(f"{what} header has no {_END_NAMES.get(what, 'end')} line")
        if len(buf) > limit:
            raise _ParseError(f"{what} header is longer than {limit} bytes (no {_END_NAMES.get(what, 'end')} line)")


_END_NAMES = {"PLY": "end_header", "PCD": "DATA"}


def _looks_binary(head: bytes, kind: str) -> None:
    if b"\x00" in head[:4096]:
        raise _ParseError(f"looks binary, not a text {kind} file")


def _read_exact(fh: BinaryIO, n: int) -> bytes:
    data = fh.read(n)
    if len(data) != n:  # the file shrank while being read
        raise _ParseError(f"file ended {n - len(data)} bytes early")
    return data


def _xyz_dtype(*dtypes: np.dtype) -> type:
    """float32 when every coordinate type is exactly representable in it, else float64."""
    exact32 = {"f2", "f4", "i1", "u1", "i2", "u2"}
    return np.float32 if all(np.dtype(d).str[1:] in exact32 for d in dtypes) else np.float64


def _read_records_xyz(
    fh: BinaryIO, count: int, record: np.dtype, fields: tuple[str, str, str], out_dtype
) -> np.ndarray:
    """`count` fixed-size records from the current position, a chunk at a time, keeping only the
    three coordinate fields: the result is the only allocation that grows with the file."""
    out = np.empty((count, 3), dtype=out_dtype)
    per = max(1, CHUNK_BYTES // max(record.itemsize, 1))
    for start in range(0, count, per):
        n = min(per, count - start)
        rec = np.frombuffer(_read_exact(fh, n * record.itemsize), dtype=record, count=n)
        for j, name in enumerate(fields):
            out[start : start + n, j] = rec[name]
    return out


class _Rows:
    """A growing [n, width] array for results whose length is known only at the end (text files,
    polygon fans): grown in place with ndarray.resize (a realloc, not a copy plus the old array)."""

    def __init__(self, width: int, dtype, capacity: int = 1024):
        self.arr = np.empty((max(capacity, 16), width), dtype=dtype)
        self.n = 0

    def extend(self, rows: np.ndarray) -> None:
        need = self.n + len(rows)
        if need > len(self.arr):
            self.arr.resize((max(need, len(self.arr) + len(self.arr) // 2), self.arr.shape[1]), refcheck=False)
        self.arr[self.n : need] = rows
        self.n = need

    def result(self) -> np.ndarray:
        self.arr.resize((self.n, self.arr.shape[1]), refcheck=False)
        return self.arr


class _FanRows(_Rows):
    """Fan triangles of a mesh's polygons, checked before each fan is built (a few bytes of
    indices would otherwise cost 24 bytes per triangle):
    - a polygon visits each vertex once (closing its loop may repeat the first): one with more
      corners than the mesh has (or, before they are all read, can have) vertices, plus one, is
      malformed;
    - all triangles together stay within `max_triangles` (the reader's max_points)."""

    def __init__(self, n_vertices: int | None, of_what: str, max_triangles: int, capacity: int = 1024):
        super().__init__(3, np.int64, capacity)
        self.max_corners = None if n_vertices is None else n_vertices + 1
        self.of_what = of_what  # e.g. "the 3 vertices of the mesh"
        self.max_triangles = max_triangles

    def check_corners(self, k: int, what: str) -> None:
        if self.max_corners is not None and k > self.max_corners:
            raise _ParseError(f"{what} has {k} corners, more than {self.of_what} (a polygon visits each vertex once)")

    def check_triangles(self, more: int) -> None:
        if self.n + more > self.max_triangles:
            raise _ParseError(f"the faces make more than {self.max_triangles} triangles, the limit (max_points)")

    def add_fans(self, indices: np.ndarray, starts: np.ndarray, lengths: np.ndarray, what: str = "a face") -> None:
        if len(lengths):
            lengths = np.asarray(lengths)
            self.check_corners(int(np.max(lengths)), what)
            self.check_triangles(int(np.maximum(lengths - 2, 0).sum()))
        self.extend(_fan_flat(indices, starts, lengths))


def _fan(polys: list[list[int]]) -> np.ndarray:
    """Triangulate polygons (vertex index lists) as fans around their first vertex."""
    tris = [(p[0], p[i], p[i + 1]) for p in polys if len(p) >= 3 for i in range(1, len(p) - 1)]
    return np.asarray(tris, dtype=np.int64).reshape(-1, 3)


def _fan_flat(indices: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """`_fan` without Python lists: polygon p is indices[starts[p] : starts[p] + lengths[p]].

    Triangle j of polygon p is (first, j + 1, j + 2), in polygon order, as `_fan` makes them;
    polygons with fewer than 3 vertices give none.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    starts = np.asarray(starts, dtype=np.int64)
    if len(lengths) == 1:  # one polygon (maybe huge): slices, no index arrays
        s, k = int(starts[0]), int(lengths[0])
        out = np.empty((max(k - 2, 0), 3), dtype=np.int64)
        if k >= 3:
            out[:, 0] = indices[s]
            out[:, 1] = indices[s + 1 : s + k - 1]
            out[:, 2] = indices[s + 2 : s + k]
        return out
    if len(lengths) and (lengths == 3).all():  # the usual case: no fan to build
        cols = starts[:, None] + np.arange(3)
        return np.asarray(indices[cols], dtype=np.int64)
    per = np.maximum(lengths - 2, 0)
    total = int(per.sum())
    if total == 0:
        return np.empty((0, 3), dtype=np.int64)
    base = np.repeat(starts, per)
    offsets = np.cumsum(per) - per
    j = np.arange(total, dtype=np.int64) - np.repeat(offsets, per) + 1
    out = np.empty((total, 3), dtype=np.int64)
    out[:, 0] = indices[base]
    out[:, 1] = indices[base + j]
    out[:, 2] = indices[base + j + 1]
    return out


# Triangles per chunk in area computations: keeps the temporaries to a few tens of MB.
_AREA_CHUNK = 1 << 16


def _triangle_areas(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Triangle areas up to one common factor (vertices are scaled by their largest magnitude so
    that huge coordinates cannot overflow): fine for area weights and for "is the area zero".

    Computed a chunk of triangles at a time (each area depends on its own triangle only, so the
    values are those of a whole-array computation) so that the temporaries stay bounded."""
    v = np.asarray(v)
    magnitude = float(np.abs(v).max()) if len(v) else 0.0
    scale = magnitude if np.isfinite(magnitude) and magnitude > 0 else None
    out = np.empty(len(f), dtype=np.float64)
    for s in range(0, len(f), _AREA_CHUNK):
        fc = f[s : s + _AREA_CHUNK]
        a, b, c = (np.asarray(v[fc[:, k]], dtype=np.float64) for k in range(3))
        if scale is not None:
            a /= scale
            b /= scale
            c /= scale
        out[s : s + len(fc)] = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    return out


_BOM = b"\xef\xbb\xbf"


def _plural(name: str) -> str:
    return {"vertex": "vertices", "face": "faces"}.get(name, name + "s")
