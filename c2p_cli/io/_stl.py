"""STL meshes, ASCII and binary.

Binary: the triangle count in the header is checked against the file's size (and `max_points`)
before the triangles are read a chunk at a time. ASCII: the `vertex` lines are picked out a block
at a time and parsed by numpy.
"""

from __future__ import annotations

import re

import numpy as np

from ._common import CHUNK_BYTES, Geometry, _ParseError, _read_exact, _Rows, _Source
from ._textscan import BinaryBody as _BinaryBody
from ._textscan import blocks, float_rows

_STL_VERTEX = re.compile(rb"vertex\s+(\S+)\s+(\S+)\s+(\S+)")
_RECORD = np.dtype([("normal", "<f4", (3,)), ("v", "<f4", (3, 3)), ("attr", "<u2")])


def _read_stl(src: _Source) -> Geometry:
    with src.open() as fh:
        head = fh.read(84)
        n = int(np.frombuffer(head, dtype="<u4", count=1, offset=80)[0]) if len(head) >= 84 else 0
        if len(head) >= 84 and src.size == 84 + 50 * n:
            return _stl_binary(src, fh, n)
        if head.lstrip().startswith(b"solid"):
            fh.seek(0)
            geo = _stl_ascii(src, fh)
            if geo is not None:
                return geo
            if len(head) >= 84 and src.size >= 84 + 50 * n:
                # binary STLs often start their 80-byte header with "solid" too; trailing bytes are allowed
                return _stl_binary(src, fh, n)
            raise _ParseError("ASCII STL holds no 'vertex' lines")
        if len(head) < 84:
            raise _ParseError("not an STL file (too short for a binary STL, no 'solid' keyword)")
        held = (src.size - 84) // 50
        raise _ParseError(f"truncated binary STL: header says {n} triangles, file holds {held}")


def _stl_binary(src: _Source, fh, n: int) -> Geometry:
    if n == 0:
        raise _ParseError("no points (binary STL with 0 triangles)")
    src.check_count(3 * n, "vertices")
    fh.seek(84)
    verts = np.empty((3 * n, 3), dtype=np.float32)
    per = CHUNK_BYTES // _RECORD.itemsize
    for start in range(0, n, per):
        k = min(per, n - start)
        rec = np.frombuffer(_read_exact(fh, k * _RECORD.itemsize), dtype=_RECORD, count=k)
        verts[3 * start : 3 * (start + k)] = rec["v"].reshape(-1, 3)
    return Geometry(verts, np.arange(3 * n, dtype=np.int64).reshape(-1, 3))


def _stl_ascii(src: _Source, fh) -> Geometry | None:
    rows = _Rows(3, np.float64, capacity=max(16, src.size // 100))
    try:
        for block in blocks(fh, kind="STL"):
            found = _STL_VERTEX.findall(block)
            if found:
                region = b"\n".join(b" ".join(v) for v in found) + b"\n"
                rows.extend(float_rows(region, ncols=3, what="STL vertex", first_row=rows.n))
                if rows.n > src.max_points:
                    src.check_count(rows.n, "vertices")
    except _BinaryBody:
        return None
    if rows.n == 0:
        return None
    if rows.n % 3:
        raise _ParseError(f"ASCII STL holds {rows.n} vertices, not a multiple of 3")
    verts = rows.result()
    return Geometry(verts, np.arange(len(verts), dtype=np.int64).reshape(-1, 3))
