"""Text point files (.xyz, .txt, .pts): one point per line, commas, semicolons or spaces.

An optional header line ("x y z nx ny nz") or point count (.pts) comes first; lines starting with
# or // are comments. Parsed a block at a time with numpy's C loadtxt.
"""

from __future__ import annotations

import itertools
import re

import numpy as np

from ._common import _BOM, Geometry, _looks_binary, _ParseError, _Rows, _Source
from ._textscan import LineReader, blocks, float_rows

_COMMENT_LINES = re.compile(rb"(?m)^[ \t\r\f\v]*(?:#|//)[^\n]*")
_SEPARATORS = bytes.maketrans(b",;", b"  ")


def _is_number_row(tokens: list[bytes]) -> bool:
    try:
        [float(t) for t in tokens]
    except ValueError:
        return False
    return bool(tokens)


def _read_text_points(src: _Source) -> Geometry:
    with src.open() as fh:
        first = fh.read(4096)
        _looks_binary(first, src.kind)
        first = first.removeprefix(_BOM)
        lines = LineReader(blocks(fh, first, comments=_COMMENT_LINES, translate=_SEPARATORS, kind=src.kind))
        head = [region for region, _ in lines.take(2)]
        head_lines = b"".join(head).splitlines()
        if not head_lines:
            raise _ParseError("no points")
        tokens = head_lines[0].split()
        pending = head_lines
        if not _is_number_row(tokens):
            pending = head_lines[1:]  # a header line such as "x y z nx ny nz"
        elif len(tokens) == 1 and len(head_lines) > 1:
            pending = head_lines[1:]  # .pts files that start with the point count
        if not pending:
            raise _ParseError("no points")
        ncol = len(pending[0].split())
        if ncol < 3:
            raise _ParseError(f"line 1 has {ncol} values — need at least x y z per line")
        rows = _Rows(3, np.float64, capacity=max(16, src.size // 24))
        done = 0
        regions = [(b"\n".join(pending) + b"\n", len(pending))]
        for region, k in itertools.chain(regions, lines.rest()):
            arr = float_rows(region, usecols=(0, 1, 2), what="data line", first_row=done + 1)
            rows.extend(arr)
            done += k
        return Geometry(rows.result())
