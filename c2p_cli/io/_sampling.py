"""Points from a mesh surface, and subsampling a cloud (random or farthest point sampling)."""

from __future__ import annotations

import numpy as np

from ..errors import UsageError
from ._common import _triangle_areas
from ._fps import fps_indices, fps_indices_torch

SAMPLING_METHODS: tuple[str, ...] = ("random", "fps")


def sample_surface(
    vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator, dtype=np.float32
) -> np.ndarray:
    """`n` points [n, 3] (`dtype`, float32 by default) drawn uniformly on a triangle mesh's surface
    (area-weighted). File reading asks for float64 so that huge coordinates survive until normalised."""
    f = np.asarray(faces, dtype=np.int64)
    return _sample_surface(vertices, f, _triangle_areas(vertices, f), n, rng, dtype)


def _sample_surface(vertices, f: np.ndarray, areas: np.ndarray, n: int, rng: np.random.Generator, dtype) -> np.ndarray:
    """`sample_surface` with the areas already computed. Only the picked triangles' corners are
    converted to float64 (the values a whole-array conversion would give)."""
    total = areas.sum()
    if not (np.isfinite(total) and total > 0):
        raise ValueError("mesh has zero (or non-finite) surface area")
    idx = rng.choice(len(f), size=n, p=areas / total)
    v = np.asarray(vertices)
    a, b, c = (np.asarray(v[f[idx, k]], dtype=np.float64) for k in range(3))
    u, w = rng.random((2, n, 1))
    # Reflecting samples of the unit square's upper triangle keeps the density uniform.
    flip = (u + w) > 1.0
    u, w = np.where(flip, 1.0 - u, u), np.where(flip, 1.0 - w, w)
    return (a + u * (b - a) + w * (c - a)).astype(dtype, copy=False)


FPS_BACKENDS: tuple[str, ...] = ("numpy", "torch", "fpsample")


def farthest_point_sample(
    points: np.ndarray,
    n: int,
    rng: np.random.Generator | int | None = 0,
    *,
    backend: str = "numpy",
    device: str | None = None,
) -> np.ndarray:
    """`n` points of `points` picked by farthest point sampling from a seeded random start.

    Returns all points when N <= n. `backend`:
    - "numpy" (default): exact, and bit for bit the picks of the plain O(n N) loop, but blocks of
      points that cannot change are skipped (see `clip2point.io._fps`).
    - "torch": the same picks computed on `device` (e.g. "cuda"); torch is imported only then.
    - "fpsample": the `fpsample` package's bucket FPS (a kd-tree approximation): faster still on
      millions of points, but it picks different points than the exact loop (well spread, not the
      same); opt-in only.
    """
    pts = np.asarray(points)
    if len(pts) <= n:
        return pts
    if backend not in FPS_BACKENDS:
        raise UsageError(f"backend must be one of {', '.join(FPS_BACKENDS)}, got {backend!r}")
    rng = np.random.default_rng(rng)
    # Coordinates as three contiguous float32 rows, centred in float64 first so that large
    # offsets (scanner coordinates) keep their precision.
    centre = np.asarray(pts, dtype=np.float64).mean(axis=0)
    cols = np.empty((3, len(pts)), dtype=np.float32)
    for axis in range(3):
        cols[axis] = pts[:, axis].astype(np.float64) - centre[axis]
    start = int(rng.integers(len(pts)))
    if backend == "torch":
        chosen = fps_indices_torch(cols, n, start, device or "cpu")
    elif backend == "fpsample":
        chosen = _fpsample(cols, n, start)
    else:
        chosen = fps_indices(cols, n, start)
    return pts[chosen]


def _fpsample(cols: np.ndarray, n: int, start: int) -> np.ndarray:
    try:
        import fpsample
    except ImportError:
        raise UsageError("backend='fpsample' needs the fpsample package (pip install fpsample)") from None
    h = max(1, min(7, int(np.log2(max(cols.shape[1], 2))) - 1))
    return np.asarray(fpsample.bucket_fps_kdline_sampling(cols.T, n, h=h, start_idx=start), dtype=np.int64)


def subsample(
    points: np.ndarray, n: int, method: str = "random", seed: np.random.Generator | int | None = 0
) -> np.ndarray:
    """At most `n` points: `random` (seeded, without replacement) or `fps`; fewer are kept as they are."""
    _check_sampling(n, method)
    if len(points) <= n:
        return points
    rng = np.random.default_rng(seed)
    if method == "fps":
        return farthest_point_sample(points, n, rng)
    return points[rng.choice(len(points), size=n, replace=False)]


def _check_sampling(n: int, method: str) -> None:
    if method not in SAMPLING_METHODS:
        raise UsageError(f"sampling must be one of {', '.join(SAMPLING_METHODS)}, got {method!r}")
    if n < 1:
        raise UsageError(f"the number of points must be at least 1, got {n}")
