"""Wavefront OBJ meshes: vertices and polygon faces, a block of lines at a time.

Per block, the `v` and `f` lines are picked out with regular expressions (C speed), vertex
coordinates parsed by numpy's loadtxt and face indices by the vectorised integer parser;
polygons are fan-triangulated without Python lists. `max_points` bounds vertices and triangles.
"""

from __future__ import annotations

import re

import numpy as np

from ._common import _BOM, Geometry, _FanRows, _looks_binary, _ParseError, _Rows, _Source
from ._textscan import blocks, float_rows, int_table

_V_LINES = re.compile(rb"(?m)^[ \t]*v[ \t]+([^\n]*)")
_F_LINES = re.compile(rb"(?m)^[ \t]*f[ \t]+([^\n]*)")
_V_OR_F = re.compile(rb"(?m)^[ \t]*([vf])[ \t]")
_COMMENTS = re.compile(rb"#[^\n]*")
_SLASHES = re.compile(rb"/[^ \t\r\n]*")


def _read_obj(src: _Source) -> Geometry:
    verts = _Rows(3, np.float64, capacity=max(16, src.size // 64))
    # Vertices may come after the faces that use them, so a polygon's corners are bounded by the
    # 'v' lines the file has room for ("v 0 0 0" and a line break: 8 bytes).
    room = src.size // 8
    tris = _FanRows(room, f"the {room} vertices a file of {src.size} bytes can hold", src.max_points,
                    capacity=max(16, src.size // 32))
    with src.open() as fh:
        first = fh.read(4096)
        _looks_binary(first, "OBJ")
        line_base = 0  # 'v' lines before this block
        for block in blocks(fh, first.removeprefix(_BOM), comments=_COMMENTS, kind="OBJ"):
            v_region, n_v, f_region, n_f = _pick_lines(block)
            if n_v:
                rows = float_rows(v_region, usecols=(0, 1, 2), what="OBJ vertex", first_row=line_base + 1)
                verts.extend(rows)
                if verts.n > src.max_points:
                    src.check_count(verts.n, "vertices")
            if n_f:
                if b"/" in f_region:
                    f_region = _SLASHES.sub(b"", f_region)
                _faces(block, f_region, n_f, line_base, tris)
            line_base += n_v
    if verts.n == 0:
        raise _ParseError("no points (no 'v' lines)")
    faces = tris.result()
    return Geometry(verts.result(), faces if len(faces) else None)


def _pick_lines(block: bytes) -> tuple[bytes, int, bytes, int]:
    """(the 'v' lines' coordinates, how many, the 'f' lines' indices, how many) of a block, each
    line without its keyword. Lines are told apart by their first two bytes with numpy; a block
    with indented lines goes through regular expressions instead."""
    a = np.frombuffer(block, dtype=np.uint8)
    ends = np.flatnonzero(a == 10)
    starts = np.concatenate([[0], ends[:-1] + 1])
    first = a[starts]
    if (first == 32).any() or (first == 9).any():
        v_lines, f_lines = _V_LINES.findall(block), _F_LINES.findall(block)
        return b"\n".join(v_lines) + b"\n", len(v_lines), b"\n".join(f_lines) + b"\n", len(f_lines)
    second = a[np.minimum(starts + 1, len(a) - 1)]
    gap = (second == 32) | (second == 9)
    out = []
    for key in (ord("v"), ord("f")):
        keep = (first == key) & gap & (ends > starts + 1)
        n = int(keep.sum())
        if not n:
            out += [b"", 0]
            continue
        lengths = ends - starts + 1
        mask = np.repeat(keep, lengths)
        mask[starts[keep]] = False  # the keyword
        mask[starts[keep] + 1] = False  # and the white space after it
        out += [a[mask].tobytes(), n]
    return out[0], out[1], out[2], out[3]


def _faces(block: bytes, region: bytes, n_lines: int, v_before: int, tris: _FanRows) -> None:
    values, valid, per_line = int_table(region, width=3)
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
    tris.add_fans(values, starts, per_line, "an OBJ face")
