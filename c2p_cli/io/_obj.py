"""Wavefront OBJ meshes: vertices and polygon faces."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._common import Geometry, _fan, _ParseError, _read_text


def _read_obj(path: Path) -> Geometry:
    verts: list[list[str]] = []
    polys: list[list[int]] = []
    for lineno, raw in enumerate(_read_text(path).splitlines(), 1):
        tok = raw.split()
        if not tok:
            continue
        if tok[0] == "v":
            if len(tok) < 4:
                raise _ParseError(f"OBJ line {lineno}: vertex with fewer than 3 coordinates")
            verts.append(tok[1:4])
        elif tok[0] == "f":
            poly = []
            for t in tok[1:]:
                i = int(t.split("/", 1)[0])
                # OBJ indices are 1-based; negative ones count back from the latest vertex.
                poly.append(len(verts) + i if i < 0 else i - 1)
            if len(poly) < 3:
                raise _ParseError(f"OBJ line {lineno}: face with fewer than 3 vertices")
            polys.append(poly)
    if not verts:
        raise _ParseError("no points (no 'v' lines)")
    return Geometry(np.asarray(verts, dtype=np.float64), _fan(polys) if polys else None)
