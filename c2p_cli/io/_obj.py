"""Wavefront OBJ meshes: vertices and polygon faces, a block of lines at a time.

Per block, the `v` and `f` lines are picked out with regular expressions (C speed), vertex
coordinates parsed by numpy's loadtxt and face indices by the vectorised integer parser;
polygons are fan-triangulated without Python lists. `max_points` bounds vertices and triangles.
"""

from __future__ import annotations

import re

import numpy as np

from ._common import _BOM, Geometry, _fan_flat, _looks_binary, _ParseError, _Rows, _Source
from ._textscan import blocks, float_rows, int_tokens_bounded

_V_LINES = re.compile(rb"(?m)^[ \t]*v[ \t]+([^\n]*)")
_F_LINES = re.compile(rb"(?m)^[ \t]*f[ \t]+([^\n]*)")
_V_OR_F = re.compile(rb"(?m)^[ \t]*([vf])[ \t]")
_COMMENTS = re.compile(rb"#[^\n]*")
_SLASHES = re.compile(rb"/[^ \t\r\n]*")


def _read_obj(src: _Source) -> Geometry:
    verts = _Rows(3, np.float64, capacity=max(16, src.size // 64))
    tris = _Rows(3, np.int64, capacity=max(16, src.size // 32))
    with src.open() as fh:
        first = fh.read(4096)
        _looks_binary(first, "OBJ")
        line_base = 0  # 'v' lines before this block
        for block in blocks(fh, first.removeprefix(_BOM), comments=_COMMENTS, kind="OBJ"):
            v_lines = _V_LINES.findall(block)
            f_lines = _F_LINES.findall(block)
            if v_lines:
                region = b"\n".join(v_lines) + b"\n"
                rows = float_rows(region, usecols=(0, 1, 2), what="OBJ vertex", first_row=line_base + 1)
                verts.extend(rows)
                if verts.n > src.max_points:
                    src.check_count(verts.n, "vertices")
            if f_lines:
                region = _SLASHES.sub(b"", b"\n".join(f_lines) + b"\n")
                tris.extend(_faces(block, region, len(f_lines), line_base))
                if tris.n > src.max_points:
                    src.check_count(tris.n, "triangles")
            line_base += len(v_lines)
    if verts.n == 0:
        raise _ParseError("no points (no 'v' lines)")
    faces = tris.result()
    return Geometry(verts.result(), faces if len(faces) else None)


def _faces(block: bytes, region: bytes, n_lines: int, v_before: int) -> np.ndarray:
    values, valid, per_line = int_tokens_bounded(region)
    starts = np.cumsum(per_line) - per_line
    short = np.flatnonzero(per_line < 3)
    if len(short):
        raise _ParseError(f"OBJ face {int(short[0])} (in its block) has fewer than 3 vertices")
    if not valid.all():
        raise _ParseError("OBJ face with a vertex index that is not an integer")
    if (values == 0).any():
        raise _ParseError("OBJ face refers to vertex 0 (OBJ indices start at 1)")
    negative = values < 0
    if negative.any():
        # Negative indices count back from the latest vertex before the face's line.
        kinds = [m.group(1) for m in _V_OR_F.finditer(block)]
        is_v = np.frombuffer(b"".join(kinds), dtype=np.uint8) == ord("v")
        v_seen = np.cumsum(is_v)[~is_v]  # vertices before each face line, in this block
        latest = v_before + np.repeat(v_seen[:n_lines], per_line)
        values = np.where(negative, latest + values, values - 1)
    else:
        values = values - 1
    return _fan_flat(values, starts, per_line)
