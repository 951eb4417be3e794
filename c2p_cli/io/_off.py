"""OFF meshes, including ModelNet's broken header "OFF490 518 0".

The counts are read from the first lines and checked (not negative, within `max_points`, and
small enough for the file's size) before the body is parsed a block at a time.
"""

from __future__ import annotations

import re

import numpy as np

from ._common import _BOM, Geometry, _FanRows, _looks_binary, _ParseError, _quote, _Source
from ._ply import _ascii_polygons
from ._textscan import LineReader, blocks, float_rows

_OFF_KEYWORD = re.compile(r"^(ST)?(C)?(N)?(4)?(n)?OFF", re.IGNORECASE)
_COMMENTS = re.compile(rb"#[^\n]*")


def _read_off(src: _Source) -> Geometry:
    with src.open() as fh:
        first = fh.read(4096)
        _looks_binary(first, "OFF")
        first = first.removeprefix(_BOM)
        lines = LineReader(blocks(fh, first, comments=_COMMENTS, kind="OFF"))
        head = b"".join(r for r, _ in lines.take(1)).decode("latin-1").strip()
        if not head:
            raise _ParseError("no points")
        m = _OFF_KEYWORD.match(head)
        if m is None:
            raise _ParseError("not an OFF file (first line does not start with OFF)")
        if m.group(4) or m.group(5):
            raise _ParseError("4OFF / nOFF (non-3D vertices) are not supported")
        rest = head[m.end() :].split()  # ModelNet writes "OFF490 518 0" on one line
        if len(rest) < 2:
            counts = b"".join(r for r, _ in lines.take(1)).decode("latin-1").split()
            if not counts:
                raise _ParseError("OFF header has no vertex/face counts")
            rest = counts
        try:
            nv, nf = int(rest[0]), int(rest[1])
        except (ValueError, IndexError):
            raise _ParseError(f"OFF counts line is not 'vertices faces edges': {_quote(' '.join(rest))}") from None
        src.check_count(nv, "vertices")
        src.check_count(nf, "faces")
        if nv == 0:
            raise _ParseError("no points")
        # "0 0 0" and a line break per vertex, "0" and a line break per face at the very least
        src.check_fits(nv, 5, src.size, "vertices")
        src.check_fits(nf, 2, src.size - 5 * nv, "faces")
        verts = np.empty((nv, 3), dtype=np.float64)
        done = 0
        for region, k in lines.take(nv):
            verts[done : done + k] = float_rows(region, usecols=(0, 1, 2), what="OFF vertex", first_row=done)
            done += k
        if done < nv:
            raise _ParseError(f"truncated OFF: header says {nv} vertices, file holds {done}")
        if nf == 0:
            return Geometry(verts, None)
        tris = _FanRows(nv, f"the {nv} vertices of the mesh", src.max_points, capacity=nf)
        done = 0
        for region, k in lines.take(nf):
            _ascii_polygons(region, 0, done, "OFF face", tris)
            done += k
        if done < nf:
            raise _ParseError(f"truncated OFF: header says {nf} faces, file holds {done}")
        return Geometry(verts, tris.result())
