"""NumPy arrays (.npy) and archives (.npz), never unpickled.

The .npy header is read first and its shape checked against the file's size and `max_points`;
the data is then read a block of rows at a time, keeping x, y, z only. An .npz member is checked
the same way from its own header, and its declared uncompressed size against a limit derived from
`max_points` before anything is decompressed; it is then decompressed as a stream (zipfile stops
at the declared size and checks the CRC), so an archive that inflates to gigabytes costs nothing.
"""

from __future__ import annotations

import zipfile
from typing import BinaryIO

import numpy as np

from ._common import CHUNK_BYTES, Geometry, _ParseError, _quote, _short, _Source, _xyz_dtype

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
# An .npz member may inflate to at most this many bytes per allowed point (8 float64 columns).
MAX_BYTES_PER_POINT = 64
_SHOWN_KEYS = 5


def _npy_header(fh: BinaryIO, what: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, header length) of an .npy stream positioned at its start."""
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except (ValueError, EOFError, SyntaxError) as e:
        raise _ParseError(f"not a readable {what} ({_short(e)})") from None
    if dtype.hasobject:
        raise _ParseError(f"not a readable {what} (it holds Python objects, which are never unpickled)")
    return tuple(int(s) for s in shape), bool(fortran), dtype, fh.tell()


def _xyz_plan(shape: tuple[int, ...], dtype: np.dtype, what: str, src: _Source) -> tuple[int, int]:
    """(rows, columns) of a cloud array after dropping leading axes of length 1, checked."""
    if dtype.kind not in "fiub" or dtype.fields is not None or dtype.subdtype is not None:
        raise _ParseError(f"{what} has dtype {dtype} — need numbers")
    s = list(shape)
    while len(s) > 2 and s[0] == 1:
        s = s[1:]
    if len(s) != 2 or s[1] < 3:
        raise _ParseError(f"{what} has shape {tuple(shape)} — need N x 3 or more columns")
    if s[0] == 0:
        raise _ParseError("no points")
    src.check_count(s[0], "points")
    return s[0], s[1]


def _read_rows(fh: BinaryIO, n: int, ncol: int, fortran: bool, dtype: np.dtype) -> np.ndarray:
    """x, y, z of an [n, ncol] array stored from the stream's position, a block at a time."""
    out_dtype = _xyz_dtype(dtype)
    out = np.empty((n, 3), dtype=out_dtype)
    item = dtype.itemsize
    if fortran:  # columns are contiguous: the first three columns are the first 3 n values
        for j in range(3):
            _read_into(fh, out[:, j], n, dtype)
        return out
    per = max(1, CHUNK_BYTES // (item * ncol))
    for start in range(0, n, per):
        k = min(per, n - start)
        block = _read_block(fh, k * ncol * item)
        out[start : start + k] = np.frombuffer(block, dtype=dtype, count=k * ncol).reshape(k, ncol)[:, :3]
    return out


def _read_into(fh: BinaryIO, dest: np.ndarray, n: int, dtype: np.dtype) -> None:
    per = max(1, CHUNK_BYTES // dtype.itemsize)
    for start in range(0, n, per):
        k = min(per, n - start)
        dest[start : start + k] = np.frombuffer(_read_block(fh, k * dtype.itemsize), dtype=dtype, count=k)


def _read_block(fh: BinaryIO, nbytes: int) -> bytes:
    parts, got = [], 0
    while got < nbytes:  # zip streams return short reads
        part = fh.read(nbytes - got)
        if not part:
            raise _ParseError(f"truncated array data: {nbytes - got} bytes missing")
        parts.append(part)
        got += len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _read_npy(src: _Source) -> Geometry:
    with src.open() as fh:
        if fh.read(4) == _ZIP_MAGIC:
            raise _ParseError("is an .npz archive, not an .npy array (rename it to .npz)")
        fh.seek(0)
        shape, fortran, dtype, header = _npy_header(fh, ".npy array")
        n, ncol = _xyz_plan(shape, dtype, ".npy array", src)
        need = n * ncol * dtype.itemsize
        if header + need > src.size:
            raise _ParseError(f"truncated .npy array: its header declares {need} bytes of data, file holds {src.size - header}")
        return Geometry(_read_rows(fh, n, ncol, fortran, dtype))


def _keys_shown(keys: list[str]) -> str:
    """A bounded list of member names: an archive may hold 100,000 of them."""
    shown = ", ".join(_short(k, 24) for k in keys[:_SHOWN_KEYS])
    return shown + (f" and {len(keys) - _SHOWN_KEYS} more" if len(keys) > _SHOWN_KEYS else "")


def _read_npz(src: _Source) -> Geometry:
    with src.open() as fh:
        if fh.read(6) == _NPY_MAGIC:
            raise _ParseError("is an .npy array, not an .npz archive (rename it to .npy)")
    try:
        with zipfile.ZipFile(src.path) as z:
            members = {info.filename.removesuffix(".npy"): info for info in z.infolist() if not info.is_dir()}
            keys = list(members)
            if not keys:
                raise _ParseError(".npz holds no arrays")
            key = next((k for k in ("points", "xyz") if k in members), None)
            if key is None:
                if len(keys) > 1:
                    raise _ParseError(f".npz has several arrays and none is named points or xyz: {_keys_shown(keys)}")
                key = keys[0]
            info = members[key]
            what = f".npz array {_quote(key, 40)}"
            limit = MAX_BYTES_PER_POINT * src.max_points
            if info.file_size > limit:
                raise _ParseError(
                    f"{what} declares {info.file_size} uncompressed bytes, more than the limit of {limit} "
                    f"({MAX_BYTES_PER_POINT} bytes x max_points)"
                )
            with z.open(info) as member:
                shape, fortran, dtype, header = _npy_header(member, what)
                n, ncol = _xyz_plan(shape, dtype, what, src)
                need = n * ncol * dtype.itemsize
                if header + need > info.file_size:
                    raise _ParseError(
                        f"{what}: its header declares {need} bytes of data, the archive holds {info.file_size - header}"
                    )
                return Geometry(_read_rows(member, n, ncol, fortran, dtype))
    except _ParseError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, NotImplementedError) as e:
        raise _ParseError(f"not a readable .npz archive ({_short(e)})") from None
