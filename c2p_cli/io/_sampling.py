"""Points from a mesh surface, and subsampling a cloud (random or farthest point sampling)."""

from __future__ import annotations

import numpy as np

from ..errors import UsageError
from ._common import _triangle_areas

SAMPLING_METHODS: tuple[str, ...] = ("random", "fps")


def sample_surface(
    vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator, dtype=np.float32
) -> np.ndarray:
    """`n` points [n, 3] (`dtype`, float32 by default) drawn uniformly on a triangle mesh's surface
    (area-weighted). File reading asks for float64 so that huge coordinates survive until normalised."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    areas = _triangle_areas(v, f)
    total = areas.sum()
    if not (np.isfinite(total) and total > 0):
        raise ValueError("mesh has zero (or non-finite) surface area")
    idx = rng.choice(len(f), size=n, p=areas / total)
    a, b, c = v[f[idx, 0]], v[f[idx, 1]], v[f[idx, 2]]
    u, w = rng.random((2, n, 1))
    # Reflecting samples of the unit square's upper triangle keeps the density uniform.
    flip = (u + w) > 1.0
    u, w = np.where(flip, 1.0 - u, u), np.where(flip, 1.0 - w, w)
    return (a + u * (b - a) + w * (c - a)).astype(dtype, copy=False)


def farthest_point_sample(
    points: np.ndarray, n: int, rng: np.random.Generator | int | None = 0
) -> np.ndarray:
    """`n` points of `points` picked by farthest point sampling from a seeded random start.

    O(n * N) time with a running minimum-distance array. Returns all points when N <= n.
    """
    pts = np.asarray(points)
    if len(pts) <= n:
        return pts
    rng = np.random.default_rng(rng)
    # Coordinates as three contiguous float32 rows, centred in float64 first so that large
    # offsets (scanner coordinates) keep their precision: 2-3x faster than an [N, 3] float64 pass.
    p = np.asarray(pts, dtype=np.float64)
    cols = np.ascontiguousarray((p - p.mean(axis=0)).T.astype(np.float32))
    chosen = np.empty(n, dtype=np.int64)
    chosen[0] = rng.integers(len(pts))
    min_d = np.full(len(pts), np.inf, dtype=np.float32)
    d = np.empty_like(min_d)
    tmp = np.empty_like(min_d)
    for i in range(1, n):
        c = cols[:, chosen[i - 1]]
        np.subtract(cols[0], c[0], out=tmp)
        np.multiply(tmp, tmp, out=d)
        for axis in (1, 2):
            np.subtract(cols[axis], c[axis], out=tmp)
            tmp *= tmp
            d += tmp
        np.minimum(min_d, d, out=min_d)
        chosen[i] = int(np.argmax(min_d))
    return pts[chosen]


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
