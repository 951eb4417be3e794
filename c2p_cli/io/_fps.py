"""Farthest point sampling: exact, and fast.

`fps_indices(cols, n, start)` gives exactly the indices of the reference loop (`_fps_reference`:
float32 squared distances ((dx² + dy²) + dz²) to the latest pick, a running minimum, the first
index of the largest minimum), but touches only the points whose minimum can change. Points are
grouped in blocks of nearby points (Morton order); a block whose bounding box is farther from
the new pick than the largest minimum inside it cannot change and is skipped. The distance of
a skipped point, computed in float32, would be at least its box's lower bound times (1 - 5e-7)
(five roundings of 2^-24 each), so skipping when bound x (1 - 1e-6) >= that largest minimum
leaves every minimum, and so every pick, bit for bit as the reference makes them. Ties go to the
smallest original index, as numpy's argmax does, because each block keeps its points in index order.

`fps_indices_torch` runs the reference loop on a torch device (a GPU) with the same arithmetic.
"""

from __future__ import annotations

import numpy as np

_LEAF = 1024  # points per block (measured best of 256, 512, 1024 on 1M points)
_MARGIN = 1.0 - 1e-6
_TINY = 1e-30  # below this a bound could lose to float32 underflow: never skip


def _fps_reference(cols: np.ndarray, n: int, start: int) -> np.ndarray:
    """The plain O(n N) loop (the behaviour every other path must reproduce)."""
    chosen = np.empty(n, dtype=np.int64)
    chosen[0] = start
    min_d = np.full(cols.shape[1], np.inf, dtype=np.float32)
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
    return chosen


def _morton_order(cols: np.ndarray) -> np.ndarray:
    """Indices sorting the points along a Z-order curve of a 32^3 grid (15-bit codes, so numpy's
    stable sort is a radix sort); points of one cell keep their index order."""
    lo = cols.min(axis=1).astype(np.float64)
    span = float((cols.max(axis=1).astype(np.float64) - lo).max())
    scale = 31.999 / span if span > 0 else 0.0
    code = np.zeros(cols.shape[1], dtype=np.uint16)
    for axis in range(3):
        q = ((cols[axis] - lo[axis]) * scale).astype(np.uint16)
        q = (q | (q << 8)) & 0x100F
        q = (q | (q << 4)) & 0x10C3
        q = (q | (q << 2)) & 0x1249
        code |= q << axis
    return np.argsort(code, kind="stable")


def fps_indices(cols: np.ndarray, n: int, start: int) -> np.ndarray:
    """Indices of `n` farthest points of `cols` (float32 [3, N], centred), from index `start`."""
    N = cols.shape[1]
    if N <= 4 * _LEAF or not np.isfinite(cols).all():
        return _fps_reference(cols, n, start)
    blocks = -(-N // _LEAF)
    order = _morton_order(cols)
    pad = blocks * _LEAF - N
    # Padding entries get index N + k (sorted last in their block) and a minimum of -1 (never picked).
    idx = np.concatenate([order, np.arange(N, N + pad)]).reshape(blocks, _LEAF)
    idx.sort(axis=1)
    real = np.minimum(idx, N - 1)
    X, Y, Z = np.take(cols, real, axis=1)
    min_d = np.full((blocks, _LEAF), np.inf, dtype=np.float32)
    min_d[idx >= N] = -1.0
    lo = np.stack([X.min(axis=1), Y.min(axis=1), Z.min(axis=1)], axis=1).astype(np.float64)
    hi = np.stack([X.max(axis=1), Y.max(axis=1), Z.max(axis=1)], axis=1).astype(np.float64)
    block_max = np.full(blocks, np.inf, dtype=np.float64)
    chosen = np.empty(n, dtype=np.int64)
    chosen[0] = start
    for i in range(1, n):
        c = cols[:, chosen[i - 1]]
        c64 = c.astype(np.float64)
        gap = np.maximum(np.maximum(lo - c64, c64 - hi), 0.0)
        bound = (gap * gap).sum(axis=1)
        touch = np.flatnonzero(~((bound * _MARGIN >= block_max) & (bound > _TINY)))
        if len(touch) > blocks // 3:  # most blocks: whole arrays beat gathering them
            _update(X, Y, Z, c, min_d, block_max, slice(None))
        elif len(touch):
            _update(X, Y, Z, c, min_d, block_max, touch)
        top = block_max.max()
        cands = np.flatnonzero(block_max == top)
        if len(cands) == 1:
            b = int(cands[0])
            chosen[i] = idx[b, int(np.argmax(min_d[b]))]
        else:
            chosen[i] = min(int(idx[b, int(np.argmax(min_d[b]))]) for b in cands)
    return chosen


def _update(X, Y, Z, c, min_d, block_max, rows) -> None:
    """Minima of the blocks `rows` against the pick `c`, in the reference's float32 order. A block
    that could have been skipped gets its own minima back (its distances are not smaller)."""
    tmp = X[rows] - c[0]
    d = tmp * tmp
    tmp = Y[rows] - c[1]
    tmp *= tmp
    d += tmp
    tmp = Z[rows] - c[2]
    tmp *= tmp
    d += tmp
    m = np.minimum(min_d[rows], d, out=d)
    min_d[rows] = m
    block_max[rows] = m.max(axis=1)


def fps_indices_torch(cols: np.ndarray, n: int, start: int, device) -> np.ndarray:
    """The reference loop on a torch device, with the same float32 operations in the same order
    (no fused multiply-adds: each operation is its own kernel); one synchronisation at the end."""
    import torch

    t = torch.as_tensor(cols, device=device)
    N = t.shape[1]
    chosen = torch.empty(n, dtype=torch.int64, device=device)
    chosen[0] = int(start)
    min_d = torch.full((N,), float("inf"), dtype=torch.float32, device=device)
    for i in range(1, n):
        c = t[:, chosen[i - 1]]
        tmp = t[0] - c[0]
        d = tmp * tmp
        for axis in (1, 2):
            tmp = t[axis] - c[axis]
            d = d + tmp * tmp
        min_d = torch.minimum(min_d, d)
        chosen[i] = torch.argmax(min_d)
    return chosen.cpu().numpy()
