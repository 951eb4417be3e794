"""KITTI / nuScenes-style .bin scans: raw little-endian float32 rows (x, y, z, intensity[, ring]).

The file has no header, so its size must be a whole number of rows of `bin_columns` float32
values (4 for KITTI, 5 for nuScenes); the row count is checked against `max_points`, then the
rows are read a chunk at a time, keeping x, y, z.

Many other files end in .bin (PyTorch checkpoints such as pytorch_model.bin, firmware, caches), and
any file of the right size would read as a cloud of noise: a folder scan would then "classify" a
model checkpoint. So a file that opens with a known container's signature is refused.
"""

from __future__ import annotations

import numpy as np

from ._common import Geometry, _ParseError, _read_records_xyz, _Source

# Opening bytes of containers that are never raw float32 rows: zip (torch.save since 1.6), pickle
# protocols 2-5 (older torch.save), gzip, safetensors (a little-endian header length, then JSON).
# A short signature could also begin a real scan, so it counts only together with what these
# signatures make of the first float: a non-zero x under a micrometre, which no scanner reports.
_SIGNATURES = (
    (b"PK\x03\x04", "a zip archive (a PyTorch checkpoint?)"),
    (b"\x1f\x8b", "a gzip file"),
    *((bytes([0x80, p]), "a Python pickle (a PyTorch checkpoint?)") for p in range(2, 6)),
)


def _container(head: bytes, size: int, last: bytes) -> str | None:
    if head.startswith(b"\x89HDF\r\n\x1a\n"):  # 8 bytes: no scan begins so
        return "an HDF5 file"
    # pickle protocol 4 / 5 opens with a FRAME opcode and the frame's 8-byte length; protocols
    # 2 / 3 (pickle.dump's default until Python 3.8) with PROTO and end with STOP, a byte a scan's
    # last float ends with only for magnitudes near 1e-11
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03") and last == b".":
        return "a Python pickle"
    if head[:3] in (b"\x80\x04\x95", b"\x80\x05\x95") and len(head) >= 11 and int.from_bytes(head[3:11], "little") <= size:
        return "a Python pickle"
    if len(head) < 4:
        return None
    x = abs(float(np.frombuffer(head[:4], "<f4")[0]))
    if not 0.0 < x < 1e-6:
        return None
    if len(head) >= 10 and head[8:10] == b'{"':
        return "a safetensors file"
    return next((what for magic, what in _SIGNATURES if head.startswith(magic)), None)


def _read_bin(src: _Source) -> Geometry:
    with src.open() as fh:
        head = fh.read(16)
        fh.seek(max(src.size - 1, 0))
        what = _container(head, src.size, fh.read(1))
    if what is not None:
        raise _ParseError(f"this is {what}, not a raw float32 scan (KITTI / nuScenes .bin)")
    cols = src.bin_columns
    row = 4 * cols
    if src.size % row:
        raise _ParseError(
            f"size {src.size} bytes is not a whole number of {cols}-column float32 rows ({row} bytes each); "
            "set bin_columns to the file's column count (KITTI 4, nuScenes 5)"
        )
    n = src.check_count(src.size // row, "points")
    record = np.dtype([(f"c{i}", "<f4") for i in range(cols)])
    with src.open() as fh:
        return Geometry(_read_records_xyz(fh, n, record, ("c0", "c1", "c2"), np.float32))
