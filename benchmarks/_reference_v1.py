"""FROZEN: the torch reference renderer as it was before the compact CPU path (issue 12, item 4).

Do not edit or "fix" this file: it is the baseline that `benchmarks/projection.py` times side by
side with today's renderer, and the oracle that tests/render/test_compact.py requires to be
bit-identical to it. It is kernels/reference.py of commit f52084f (the same operations in the same order; only
comments, type hints and its one-chunk branch for ONNX export were left out), with the geometry
helpers it used from kernels/inputs.py copied in, so that later changes to the live modules
cannot move the baseline. It takes the validated `RenderInputs` of
`clip2point.kernels.inputs.check_inputs`.

Every point of every cloud is projected into every view at once; each point then visits the
(2k+1)^2 pixels around its own pixel, keeps those whose centre lies within `radius` (NDC), and an
`amin` scatter into a flat +inf z-buffer of B*V*S*S cells (plus one dump cell) keeps the nearest
depth per pixel; each map is then normalised.
"""

from __future__ import annotations

import math

import torch

from clip2point.defaults import BACKGROUND, CLIP_MEAN, CLIP_STD, DEPTH_SCALE

MAX_CELLS_PER_CHUNK = 1 << 23


def pixel_centers(image_size: int, device: torch.device | str | None = None) -> torch.Tensor:
    odd = torch.arange(image_size, device=device, dtype=torch.float32) * 2.0 + 1.0
    return odd / float(image_size) - 1.0


def window_radius(image_size: int, radius: float) -> int:
    radius_px = radius * image_size / 2.0
    return int(math.floor(radius_px + 0.5)) + 1


def squared_radius(radius: float) -> float:
    return float(torch.tensor(radius * radius, dtype=torch.float32))


def project(points: torch.Tensor, bases: torch.Tensor, distance: torch.Tensor):
    p = points.to(torch.float32)
    px, py, pz = p[:, None, :, 0], p[:, None, :, 1], p[:, None, :, 2]  # [B, 1, N]
    b = bases[:, :, :, None]  # [V, 3, 3, 1]: row r, column c -> [V, 1]
    u = px * b[:, 0, 0] + py * b[:, 0, 1] + pz * b[:, 0, 2]
    v = px * b[:, 1, 0] + py * b[:, 1, 1] + pz * b[:, 1, 2]
    z = px * b[:, 2, 0] + py * b[:, 2, 1] + pz * b[:, 2, 2] + distance[:, None, None]
    return u, v, z


def _splat(zbuf, points, lengths, distance, first_map, bases, image_size, radius) -> None:
    size = image_size
    num_views = bases.shape[0]
    k = window_radius(size, radius)
    dump = zbuf.shape[0] - 1
    centers = pixel_centers(size, points.device)
    offsets = torch.arange(-k, k + 1, device=points.device)

    u, v, z = project(points, bases, distance)  # [c, V, N]
    index = torch.arange(points.shape[1], device=points.device)
    valid = (index[None, None, :] < lengths[:, None, None]) & torch.isfinite(z) & (z > 0)

    half = size * 0.5
    col0 = torch.floor((u + 1.0) * half).clamp(-k - 1, size + k).nan_to_num(-k - 1).to(torch.int64)
    row0 = torch.floor((1.0 - v) * half).clamp(-k - 1, size + k).nan_to_num(-k - 1).to(torch.int64)
    cols = col0[..., None] + offsets  # [c, V, N, W]
    rows = row0[..., None] + offsets
    col_in = (cols >= 0) & (cols < size)
    row_in = (rows >= 0) & (rows < size)
    dx = centers[cols.clamp(0, size - 1)] - u[..., None]
    dy = -centers[rows.clamp(0, size - 1)] - v[..., None]
    dist2 = dx[..., None, :] * dx[..., None, :] + dy[..., :, None] * dy[..., :, None]  # [c, V, N, Wr, Wc]
    covered = (dist2 <= squared_radius(radius)) & col_in[..., None, :] & row_in[..., :, None]
    covered = covered & valid[..., None, None]

    maps = first_map + torch.arange(points.shape[0] * num_views, device=points.device).view(-1, num_views)
    pixel = (maps[:, :, None, None, None] * size + rows[..., :, None]) * size + cols[..., None, :]
    pixel = torch.where(covered, pixel, dump)
    depth = z[..., None, None].expand(covered.shape)
    zbuf.scatter_reduce_(0, pixel.reshape(-1), depth.reshape(-1), reduce="amin", include_self=True)


def normalize_depth(zbuf: torch.Tensor, channels: int, out_dtype: torch.dtype) -> torch.Tensor:
    fg = torch.isfinite(zbuf)
    inf = torch.tensor(float("inf"), dtype=torch.float32, device=zbuf.device)
    low = torch.where(fg, zbuf, inf).amin(dim=-1, keepdim=True)
    high = torch.where(fg, zbuf, -inf).amax(dim=-1, keepdim=True)
    one = torch.ones((), dtype=torch.float32, device=zbuf.device)
    denom = torch.where(high > 0, high, one)
    scale = torch.tensor(DEPTH_SCALE, dtype=torch.float32, device=zbuf.device)
    background = torch.tensor(BACKGROUND, dtype=torch.float32, device=zbuf.device)
    depth = torch.where(fg, (zbuf - low) / denom * scale, background)[:, None, :]
    if channels == 3:
        mean = torch.tensor(CLIP_MEAN, dtype=torch.float32, device=zbuf.device)[:, None]
        std = torch.tensor(CLIP_STD, dtype=torch.float32, device=zbuf.device)[:, None]
        depth = (depth - mean) / std
    return depth.to(out_dtype)


def zbuffer(inputs) -> torch.Tensor:
    batch, n, views, size = inputs.batch, inputs.num_points, inputs.num_views, inputs.image_size
    cells = size * size
    zbuf = torch.full(
        (batch * views * cells + 1,), float("inf"), dtype=torch.float32, device=inputs.points.device
    )
    width = 2 * window_radius(size, inputs.radius) + 1
    chunk = max(1, MAX_CELLS_PER_CHUNK // max(1, views * n * width * width))
    args = (inputs.bases, size, inputs.radius)
    for start in range(0, batch, chunk):
        stop = min(start + chunk, batch)
        part = slice(start, stop)
        _splat(zbuf, inputs.points[part], inputs.lengths[part], inputs.distance[part], start * views, *args)
    return zbuf[:-1].view(batch, views, cells)


def render_depth_v1(inputs) -> torch.Tensor:
    """[B, V, channels, S, S] in `inputs.out_dtype`, exactly as the renderer of commit f52084f."""
    batch, views, size = inputs.batch, inputs.num_views, inputs.image_size
    zbuf = zbuffer(inputs)
    out = normalize_depth(zbuf.reshape(batch * views, size * size), inputs.channels, inputs.out_dtype)
    return out.view(batch, views, inputs.channels, size, size)
