"""KITTI / nuScenes-style .bin scans: raw little-endian float32 rows (x, y, z, intensity[, ring]).

The file has no header, so its size must be a whole number of rows of `bin_columns` float32
values (4 for KITTI, 5 for nuScenes); the row count is checked against `max_points`, then the
rows are read a chunk at a time, keeping x, y, z.
"""

from __future__ import annotations

import numpy as np

from ._common import Geometry, _ParseError, _read_records_xyz, _Source


def _read_bin(src: _Source) -> Geometry:
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
