"""Shared by the reader tests: the clouds and meshes they write, and how a read's error is checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clip2point import io
from clip2point.errors import InputFileError

RNG = np.random.default_rng(123)
PTS = RNG.normal(size=(50, 3)).round(4)  # 4 decimals: exact in text formats
# A scan-like cloud away from the origin (scanner formats, compressed PCD); SCAN_RNG draws extra columns.
SCAN_RNG = np.random.default_rng(7)
SCAN_PTS = SCAN_RNG.normal(size=(500, 3)) * [3.0, 1.0, 0.5] + [10.0, -2.0, 1.0]

CUBE_V = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], dtype=np.float64)
CUBE_QUADS = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]


def scan_cloud(n: int = 2000, seed: int = 0) -> np.ndarray:
    """A flattened Gaussian cloud (float64), like a small scan."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)) * [0.4, 0.2, 0.9]


def raw(path: Path) -> np.ndarray:
    return io.read_points(path).astype(np.float64)


def _one_line_error(read, path: Path, **kwargs) -> str:
    with pytest.raises(InputFileError) as info:
        read(path, **kwargs)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg
    return msg


def error_of(path: Path, **kwargs) -> str:
    """The one-line InputFileError of `io.read_points(path)`, which must name the file."""
    return _one_line_error(io.read_points, path, **kwargs)


def cloud_error_of(path: Path, **kwargs) -> str:
    """The one-line InputFileError of `io.read_cloud(path)`, which must name the file."""
    return _one_line_error(io.read_cloud, path, **kwargs)


def assert_error(path: Path, *fragments: str, **kwargs) -> str:
    """`cloud_error_of`, holding every fragment."""
    msg = cloud_error_of(path, **kwargs)
    for frag in fragments:
        assert frag in msg, msg
    return msg
