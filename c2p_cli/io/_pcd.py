"""PCD (Point Cloud Library): ascii, binary and binary_compressed (LZF, decoded here).

The header is read first (at most MAX_HEADER_BYTES); POINTS is checked for sign, against
`max_points` and against the bytes left in the file before the body is read.
"""

from __future__ import annotations

import re

import numpy as np

from ._common import (
    _BOM,
    Geometry,
    _ParseError,
    _quote,
    _read_exact,
    _read_head,
    _read_records_xyz,
    _Source,
    _xyz_dtype,
)
from ._lzf import lzf_decompress
from ._textscan import LineReader, blocks, float_rows

_PCD_TYPES = {("F", 4): "f4", ("F", 8): "f8", ("I", 1): "i1", ("I", 2): "i2", ("I", 4): "i4", ("I", 8): "i8",
              ("U", 1): "u1", ("U", 2): "u2", ("U", 4): "u4", ("U", 8): "u8"}  # fmt: skip
_DATA_LINE = re.compile(rb"(?m)^[ \t]*DATA\b[^\n]*\n")
# An uncompressed binary_compressed body may hold at most this many bytes per allowed point.
_MAX_BYTES_PER_POINT = 64


def _int(tokens: list[str], what: str) -> list[int]:
    try:
        return [int(t) for t in tokens]
    except ValueError:
        raise _ParseError(f"PCD header {what} is not a list of integers: {_quote(' '.join(tokens))}") from None


def _read_pcd(src: _Source) -> Geometry:
    with src.open() as fh:
        data, end = _read_head(fh, _DATA_LINE, "PCD")
        skip = 3 if data.startswith(_BOM) else 0
        header: dict[str, list[str]] = {}
        for raw in data[skip:end].decode("ascii", errors="replace").splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            tok = line.split()
            header[tok[0].upper()] = tok[1:]
        if "FIELDS" not in header:
            raise _ParseError("not a PCD file (no FIELDS line)")
        fields = header["FIELDS"]
        n_fields = len(fields)
        sizes = _int(header.get("SIZE", ["4"] * n_fields), "SIZE")
        types = [t.upper() for t in header.get("TYPE", ["F"] * n_fields)]
        counts = _int(header.get("COUNT", ["1"] * n_fields), "COUNT")
        if not (len(sizes) == len(types) == len(counts) == n_fields):
            raise _ParseError("PCD header: FIELDS, SIZE, TYPE and COUNT have different lengths")
        if not {"x", "y", "z"} <= set(fields):
            raise _ParseError("PCD has no x/y/z fields")
        if any(c < 1 or c > 1 << 20 for c in counts):
            raise _ParseError(f"PCD header COUNT values must be between 1 and {1 << 20}")
        xyz_idx = [fields.index(a) for a in ("x", "y", "z")]
        for i in xyz_idx:
            if counts[i] != 1:
                raise _ParseError(f"PCD field {fields[i]} has COUNT {counts[i]} (need 1)")
        if "POINTS" in header:
            n = _int(header["POINTS"][:1], "POINTS")[0] if header["POINTS"] else 0
        else:
            w = _int(header.get("WIDTH", ["0"])[:1], "WIDTH")[0]
            h = _int(header.get("HEIGHT", ["1"])[:1], "HEIGHT")[0]
            if w < 0 or h < 0:
                raise _ParseError(f"PCD header declares a negative WIDTH or HEIGHT ({w} x {h})")
            n = w * h
        src.check_count(n, "points")
        if n == 0:
            raise _ParseError("no points")
        kind = header["DATA"][0].lower() if header["DATA"] else ""
        body = end
        available = src.size - body
        if kind == "ascii":
            ncol = sum(counts)
            src.check_fits(n, 2 * ncol, available)
            fh.seek(body)
            starts = np.cumsum([0, *counts])
            cols = [int(starts[i]) for i in xyz_idx]
            return Geometry(_ascii_points(LineReader(blocks(fh, kind="PCD")), n, ncol, cols))
        try:
            types_np = [_PCD_TYPES[(t, s)] for t, s in zip(types, sizes, strict=True)]
        except KeyError:
            raise _ParseError(
                f"PCD has an unsupported TYPE/SIZE pair: {_quote(str(list(zip(types, sizes, strict=True))))}"
            ) from None
        if kind == "binary":
            dt = np.dtype([(f"f{i}", "<" + t, (c,) if c > 1 else ()) for i, (t, c) in enumerate(zip(types_np, counts, strict=True))])
            if dt.itemsize * n > available:
                raise _ParseError(f"truncated binary PCD: header says {n} points, file holds {available // dt.itemsize}")
            fh.seek(body)
            fields_xyz = tuple(f"f{i}" for i in xyz_idx)
            return Geometry(_read_records_xyz(fh, n, dt, fields_xyz, _xyz_dtype(*(types_np[i] for i in xyz_idx))))
        if kind == "binary_compressed":
            fh.seek(body)
            return Geometry(_compressed(src, fh, n, types_np, counts, xyz_idx, available))
        raise _ParseError(f"unknown PCD DATA kind {_quote(kind)} (ascii, binary, binary_compressed)")


def _ascii_points(lines: LineReader, n: int, ncol: int, cols: list[int]) -> np.ndarray:
    out = np.empty((n, 3), dtype=np.float64)
    done = 0
    for region, k in lines.take(n):
        out[done : done + k] = float_rows(region, ncols=ncol, usecols=cols, what="ASCII PCD point", first_row=done)
        done += k
    if done < n:
        raise _ParseError(f"truncated ASCII PCD: header says {n} points, file holds {done}")
    return out


def _compressed(src: _Source, fh, n: int, types_np: list[str], counts: list[int], xyz_idx: list[int], available: int):
    """PCL's binary_compressed body: uint32 compressed size, uint32 uncompressed size, then LZF
    data that decompresses to the fields one after the other (all x, then all y, ...)."""
    if available < 8:
        raise _ParseError("truncated binary_compressed PCD: no compressed-size header")
    csize, usize = (int(v) for v in np.frombuffer(_read_exact(fh, 8), dtype="<u4"))
    widths = [np.dtype(t).itemsize * c for t, c in zip(types_np, counts, strict=True)]
    expected = n * sum(widths)
    if usize != expected:
        raise _ParseError(
            f"binary_compressed PCD declares {usize} uncompressed bytes, but {n} points of its fields take {expected}"
        )
    if usize > _MAX_BYTES_PER_POINT * src.max_points:
        raise _ParseError(
            f"binary_compressed PCD would decompress to {usize} bytes, more than the limit of "
            f"{_MAX_BYTES_PER_POINT * src.max_points} ({_MAX_BYTES_PER_POINT} bytes x max_points)"
        )
    if csize > available - 8:
        raise _ParseError(f"truncated binary_compressed PCD: header says {csize} compressed bytes, file holds {available - 8}")
    raw = lzf_decompress(_read_exact(fh, csize), usize)
    starts = np.cumsum([0, *widths]) * n
    out = np.empty((n, 3), dtype=_xyz_dtype(*(types_np[i] for i in xyz_idx)))
    for j, i in enumerate(xyz_idx):
        out[:, j] = np.frombuffer(raw, dtype="<" + types_np[i], count=n, offset=int(starts[i]))
    return out
