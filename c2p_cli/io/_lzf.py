"""LZF decompression (liblzf's format, as PCL writes binary_compressed PCD bodies), in Python.

Every length and back-reference is checked against the input and the declared output size, so
a file that lies costs an error, never a read outside a buffer. Literal runs and back-references
are copied as slices; only the control bytes are walked one by one.
"""

from __future__ import annotations

import numpy as np

from ._common import _ParseError


def lzf_decompress(src: bytes, out_len: int) -> np.ndarray:
    """Decompress `src` into exactly `out_len` bytes (uint8 array); raises _ParseError on any
    inconsistency. The output is allocated zeroed by the OS (calloc), so a header that declares
    far more than the data holds costs only the pages actually written."""
    arr = np.zeros(out_len, dtype=np.uint8)
    out = memoryview(arr)
    ip = op = 0
    n = len(src)
    while ip < n:
        ctrl = src[ip]
        ip += 1
        if ctrl < 32:  # a run of ctrl + 1 literal bytes
            length = ctrl + 1
            if ip + length > n:
                raise _ParseError("corrupt LZF data: a literal run runs past the compressed data")
            if op + length > out_len:
                raise _ParseError("corrupt LZF data: more bytes than the declared uncompressed size")
            out[op : op + length] = src[ip : ip + length]
            op += length
            ip += length
            continue
        length = ctrl >> 5
        if length == 7:
            if ip >= n:
                raise _ParseError("corrupt LZF data: truncated back-reference")
            length += src[ip]
            ip += 1
        if ip >= n:
            raise _ParseError("corrupt LZF data: truncated back-reference")
        ref = op - ((ctrl & 0x1F) << 8) - src[ip] - 1
        ip += 1
        length += 2
        if ref < 0:
            raise _ParseError("corrupt LZF data: a back-reference points before the start")
        if op + length > out_len:
            raise _ParseError("corrupt LZF data: more bytes than the declared uncompressed size")
        dist = op - ref
        if dist >= length:
            out[op : op + length] = out[ref : ref + length]
        else:  # overlapping: the last `dist` bytes repeat
            pattern = bytes(out[ref:op])
            out[op : op + length] = (pattern * (length // dist + 1))[:length]
        op += length
    if op != out_len:
        raise _ParseError(f"corrupt LZF data: {op} bytes decompressed, header declares {out_len}")
    out.release()
    return arr
