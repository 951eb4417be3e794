"""OFF meshes, including ModelNet's broken header "OFF490 518 0"."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ._common import Geometry, _fan, _ParseError, _read_text

_OFF_KEYWORD = re.compile(r"^(ST)?(C)?(N)?(4)?(n)?OFF", re.IGNORECASE)


def _read_off(path: Path) -> Geometry:
    text = _read_text(path)
    lines = []
    for ln in text.splitlines():
        ln = ln.split("#", 1)[0].strip()
        if ln:
            lines.append(ln)
    if not lines:
        raise _ParseError("no points")
    m = _OFF_KEYWORD.match(lines[0])
    if m is None:
        raise _ParseError("not an OFF file (first line does not start with OFF)")
    if m.group(4) or m.group(5):
        raise _ParseError("4OFF / nOFF (non-3D vertices) are not supported")
    # ModelNet writes "OFF490 518 0": the counts follow the keyword on the same line.
    rest = lines[0][m.end() :].split()
    body = lines[1:]
    if len(rest) < 2:
        if not body:
            raise _ParseError("OFF header has no vertex/face counts")
        rest = body[0].split()
        body = body[1:]
    try:
        nv, nf = int(rest[0]), int(rest[1])
    except (ValueError, IndexError):
        raise _ParseError(f"OFF counts line is not 'vertices faces edges': {' '.join(rest)!r}") from None
    if nv == 0:
        raise _ParseError("no points")
    if len(body) < nv:
        raise _ParseError(f"truncated OFF: header says {nv} vertices, file holds {len(body)}")
    vrows = [ln.split()[:3] for ln in body[:nv]]
    bad = next((i for i, r in enumerate(vrows) if len(r) < 3), None)
    if bad is not None:
        raise _ParseError(f"OFF vertex {bad} has fewer than 3 coordinates")
    verts = np.asarray(vrows, dtype=np.float64)
    frows = body[nv : nv + nf]
    if len(frows) < nf:
        raise _ParseError(f"truncated OFF: header says {nf} faces, file holds {len(frows)}")
    polys = []
    for i, ln in enumerate(frows):
        tok = ln.split()
        k = int(tok[0])
        if len(tok) < 1 + k:
            raise _ParseError(f"OFF face {i} declares {k} vertices but lists {len(tok) - 1}")
        polys.append([int(t) for t in tok[1 : 1 + k]])
    return Geometry(verts, _fan(polys) if nf else None)
