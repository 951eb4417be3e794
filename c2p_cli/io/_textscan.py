"""Text bodies a block of whole lines at a time, parsed with numpy instead of Python loops.

- `blocks` yields the rest of a file as blocks of about CHUNK_BYTES of whole, non-blank lines
  (comments stripped where the format has them), each line ending in a newline.
- `LineReader.take(n)` hands out the next `n` lines as byte regions, block by block, so that a
  format can read its vertex lines, then its face lines, without holding the file.
- `float_rows` parses a region of uniform rows with numpy's C loadtxt (correctly rounded, as
  Python's float() is); `int_tokens` parses integer tokens (face lists) fully vectorised.
Memory beyond the result is a few times one block, whatever the file's size.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from ._common import CHUNK_BYTES, _ParseError, _quote


class BinaryBody(_ParseError):
    """A text format's body holds NUL bytes."""


_WS = np.zeros(256, dtype=bool)
_WS[[9, 10, 11, 12, 13, 32]] = True
_BLANK_LINES = re.compile(rb"(?m)^[ \t\r\f\v]*\n")
_P10 = 10 ** np.arange(19, dtype=np.int64)


def raw_blocks(fh: BinaryIO, first: bytes = b"", chunk: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The rest of `fh` (after `first`, bytes already read) in blocks that end at a newline; a line
    longer than a block is kept whole. The last block ends in a newline too."""
    rest = first
    while True:
        block = fh.read(chunk)
        if not block:
            if rest:
                yield rest if rest.endswith(b"\n") else rest + b"\n"
            return
        data = rest + block if rest else block
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            rest = data
            continue
        yield data[:cut]
        rest = data[cut:]


def blocks(
    fh: BinaryIO,
    first: bytes = b"",
    *,
    comments: re.Pattern[bytes] | None = None,
    translate: bytes | None = None,
    kind: str = "text",
) -> Iterator[bytes]:
    """Blocks of whole, non-blank lines: `translate` (a bytes.translate table) first, then
    `comments` removed (a pattern matching each comment up to its line end), then blank lines."""
    for block in raw_blocks(fh, first):
        if b"\x00" in block:
            raise BinaryBody(f"looks binary, not a text {kind} file (NUL bytes in its body)")
        if translate is not None:
            block = block.translate(translate)
        if comments is not None and (b"#" in block or b"//" in block):
            block = comments.sub(b"", block)
        if _may_have_blank_lines(block):
            block = _BLANK_LINES.sub(b"", block)
        if block:
            yield block


def _may_have_blank_lines(block: bytes) -> bool:
    """Whether a line of the block may be blank: it starts with a line break or white space
    (checked on the bytes after each line break, vectorised)."""
    a = np.frombuffer(block, dtype=np.uint8)
    after = np.flatnonzero(a[:-1] == 10) + 1
    return bool(_WS[a[0]] or _WS[a[after]].any())


class LineReader:
    """Hands out lines from `blocks` by count, as regions of whole lines."""

    def __init__(self, source: Iterator[bytes]):
        self._source = source
        self._block = b""
        self._nl: np.ndarray = np.empty(0, dtype=np.int64)
        self._line = 0  # index in self._nl of the next line to hand out
        self.lines_read = 0

    def _fill(self) -> bool:
        while self._line >= len(self._nl):
            block = next(self._source, None)
            if block is None:
                return False
            self._block = block
            self._nl = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10)
            self._line = 0
        return True

    def take(self, n: int) -> Iterator[tuple[bytes, int]]:
        """(region, lines in it) pieces of the next `n` lines; fewer at the end of the file."""
        while n > 0 and self._fill():
            k = min(n, len(self._nl) - self._line)
            start = 0 if self._line == 0 else int(self._nl[self._line - 1]) + 1
            end = int(self._nl[self._line + k - 1]) + 1
            self._line += k
            self.lines_read += k
            n -= k
            yield self._block[start:end], k

    def rest(self) -> Iterator[tuple[bytes, int]]:
        """Every remaining line."""
        while self._fill():
            yield from self.take(len(self._nl) - self._line)


def float_rows(region: bytes, *, ncols: int | None = None, usecols=None, what: str = "line", first_row: int = 0) -> np.ndarray:
    """Rows of whitespace-separated numbers as float64 [rows, columns]. With `usecols`, only those
    columns are converted; `ncols` (if given) is the number every row must hold, checked on the
    region's token count (a cheap byte-level count), at least max(usecols) + 1 otherwise. Parsed
    by numpy's C loadtxt (correctly rounded, as Python's float() is). Raises _ParseError naming
    the row (counted from `first_row`)."""
    if ncols is not None:
        rows = region.count(b"\n")
        if count_tokens(region) != rows * ncols:
            raise _ParseError(_bad_row(region, ncols, None, what, first_row))
    # Split on single spaces first (loadtxt is twice as fast so): an extra space gives an empty
    # field, which fails to parse when it falls among the columns read, so this is only tried when
    # those are a prefix of the row (any extra space before them lands among them); otherwise, or
    # on failure, split on any white space.
    prefix = usecols is None or tuple(usecols) == tuple(range(len(usecols)))
    for delimiter in (" ", None) if prefix else (None,):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "input contained no data": the caller counts rows
                return np.loadtxt(
                    io.BytesIO(region), dtype=np.float64, comments=None, usecols=usecols, ndmin=2,
                    encoding="latin-1", delimiter=delimiter,
                )
        except ValueError:
            continue
    raise _ParseError(_bad_row(region, ncols if usecols is None else None, usecols, what, first_row))


def count_tokens(region: bytes) -> int:
    """Whitespace-separated tokens in a region."""
    ws = _WS[np.frombuffer(region, dtype=np.uint8)]
    if not len(ws):
        return 0
    return int(np.count_nonzero(ws[:-1] & ~ws[1:])) + int(not ws[0])


def _bad_row(region: bytes, ncols: int | None, usecols, what: str, first_row: int) -> str:
    """The first row of a region that does not parse, described (only on the error path)."""
    need = None if usecols is None else max(usecols) + 1
    for i, line in enumerate(region.splitlines()):
        tokens = line.split()
        if ncols is not None and usecols is None and len(tokens) != ncols:
            return f"{what} {first_row + i} has {len(tokens)} values, header declares {ncols}"
        if need is not None and len(tokens) < need:
            return f"{what} {first_row + i} has {len(tokens)} values, need at least {need}"
        for tok in tokens if usecols is None else [tokens[c] for c in usecols]:
            try:
                float(tok)
            except ValueError:
                return f"cannot parse numbers: {what} {first_row + i} holds {_quote(tok)}"
    return f"cannot parse numbers in {what}s {first_row} to {first_row + len(region.splitlines()) - 1}"


def int_tokens(region: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer tokens of a region of lines, vectorised: (values int64 [T], valid bool [T],
    tokens per line int64 [L]). A token is valid when it is an optional sign and 1-18 digits."""
    a = np.frombuffer(region, dtype=np.uint8)
    ws = _WS[a]
    start = ~ws
    start[1:] &= ws[:-1]
    end = ~ws
    end[:-1] &= ws[1:]
    starts = np.flatnonzero(start)
    ends = np.flatnonzero(end) + 1
    newlines = np.flatnonzero(a == 10)
    per_line = np.diff(np.searchsorted(starts, newlines, side="right"), prepend=0)
    if not len(starts):
        return np.empty(0, np.int64), np.empty(0, bool), per_line
    lengths = ends - starts
    first = a[starts]
    signed = (first == 45) | (first == 43)
    chars = np.flatnonzero(~ws)  # every non-space byte, token after token
    digits = a[chars].astype(np.int64) - 48
    is_digit = (digits >= 0) & (digits <= 9)
    token_of = np.repeat(np.arange(len(starts)), lengths)
    place = ends[token_of] - 1 - chars
    place_ok = place < 19
    contrib = np.where(is_digit & place_ok, digits * _P10[np.minimum(place, 18)], 0)
    offsets = np.cumsum(lengths) - lengths
    values = np.add.reduceat(contrib, offsets)
    bad = np.add.reduceat((~is_digit).astype(np.int64), offsets) - signed
    n_digits = lengths - signed
    valid = (bad == 0) & (n_digits >= 1) & (n_digits <= 18)
    values = np.where(first == 45, -values, values)
    return values, valid, per_line


# Bytes parsed by one int_tokens call: it needs about 20 bytes of temporaries per byte.
INT_PIECE = 1 << 18


def int_tokens_bounded(region: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`int_tokens` of a region of any size, a line-aligned piece at a time (a line longer than a
    piece, such as one huge polygon, a whitespace-aligned piece at a time), so that the
    temporaries stay bounded; the results are those of one call on the whole region."""
    if len(region) <= INT_PIECE:
        return int_tokens(region)
    values, valid, per_line = [], [], []
    start = 0
    while start < len(region):
        end = region.rfind(b"\n", start, start + INT_PIECE) + 1
        if end > start:
            v, ok, n = int_tokens(region[start:end])
        else:  # one line longer than a piece
            end = region.find(b"\n", start) + 1 or len(region)
            v, ok, n = _long_line(region[start:end])
        values.append(v)
        valid.append(ok)
        per_line.append(n)
        start = end
    return np.concatenate(values), np.concatenate(valid), np.concatenate(per_line)


def _long_line(line: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    values, valid, pos = [], [], 0
    body = line.rstrip(b"\n")
    while pos < len(body):
        end = len(body) if len(body) - pos <= INT_PIECE else max(body.rfind(b" ", pos, pos + INT_PIECE), pos + 1)
        v, ok, _ = int_tokens(body[pos:end] + b"\n")
        values.append(v)
        valid.append(ok)
        pos = end
    vals = np.concatenate(values) if values else np.empty(0, np.int64)
    return vals, (np.concatenate(valid) if valid else np.empty(0, bool)), np.array([len(vals)], dtype=np.int64)


_NOT_INT = bytes(range(256)).translate(None, b"0123456789+- \t\r\n")


def int_table(region: bytes, width: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`int_tokens_bounded`, with a fast path: when every line holds exactly `width` plain integer
    tokens (the usual triangle lists), numpy's loadtxt parses them (exactly: |value| < 2^53)."""
    if width is not None and not region.translate(None, _NOT_INT):
        rows = region.count(b"\n")
        if rows and count_tokens(region) == rows * width:
            try:
                arr = float_rows(region, ncols=width)
            except _ParseError:
                arr = None
            if arr is not None and len(arr) == rows and (np.abs(arr) < 2.0**53).all():
                values = arr.astype(np.int64).reshape(-1)
                return values, np.ones(len(values), dtype=bool), np.full(rows, width, dtype=np.int64)
    return int_tokens_bounded(region)
