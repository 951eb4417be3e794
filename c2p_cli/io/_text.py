"""Text point files (.xyz, .txt, .pts): one point per line, commas or spaces."""

from __future__ import annotations

import io as _stdio
import re
from pathlib import Path

import numpy as np

from ._common import Geometry, _ParseError, _read_text, _short

_COMMENT = re.compile(r"^\s*(#|//)")


def _is_number_row(tokens: list[str]) -> bool:
    try:
        [float(t) for t in tokens]
    except ValueError:
        return False
    return bool(tokens)


def _read_text_points(path: Path) -> Geometry:
    text = _read_text(path).replace(",", " ").replace(";", " ")
    lines = [ln for ln in text.splitlines() if ln.strip() and not _COMMENT.match(ln)]
    if not lines:
        raise _ParseError("no points")
    first = lines[0].split()
    if not _is_number_row(first):
        lines = lines[1:]  # a header line such as "x y z nx ny nz"
    elif len(first) == 1 and len(lines) > 1:
        lines = lines[1:]  # .pts files that start with the point count
    if not lines:
        raise _ParseError("no points")
    ncol = len(lines[0].split())
    if ncol < 3:
        raise _ParseError(f"line 1 has {ncol} values — need at least x y z per line")
    try:
        arr = np.loadtxt(_stdio.StringIO("\n".join(lines)), usecols=(0, 1, 2), ndmin=2, dtype=np.float64)
    except ValueError as e:
        raise _ParseError(f"cannot parse numbers: {_short(e)}") from None
    return Geometry(arr)
