"""Triton depth renderer: two launches, no Python loop over clouds or views.

Stage 1 (`_splat_kernel`, grid = (B*V maps, blocks of points)): each program projects a block of
points of one cloud into one view and, for each pixel of the static (2k+1)^2 window around each
point's pixel, does `atomic_min` of the depth into a float32 z-buffer initialised to +inf.
Stage 2 (`_normalize_kernel`, grid = (B*V,)): one program per map reduces the foreground min / max
over pixel blocks, then writes (d - min) / max * 200/255 (1.0 on background), optionally the
3-channel CLIP normalisation, cast to the output dtype.

Exactness against clip2point.kernels.reference: the projection, the coverage test and the normalisation are
the same float32 operations in the same order, on the same pixel-centre table
(`inputs.pixel_centers`); kernels are launched with `enable_fp_fusion=False` so that the GPU does
not contract a*b + c into an FMA, and divisions use `tl.math.div_rn` (IEEE round-to-nearest; plain
`/` is an approximate division on NVIDIA GPUs). Only depths are written, so the order of atomic
updates between equal depths cannot change the result: masks are identical and values equal to
the last bit in float32 (see tests/render/test_triton.py for the tolerance of cast outputs).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from clip2point.defaults import BACKGROUND, CLIP_MEAN, CLIP_STD, DEPTH_SCALE

from ._backend import interpreter_enabled
from .inputs import RenderInputs, pixel_centers, squared_radius, window_radius

# GPU: small blocks keep many programs in flight. The CPU interpreter pays per program and per op,
# not per element, so it gets blocks as large as the data.
POINTS_PER_PROGRAM = 128
PIXELS_PER_BLOCK = 2048
INTERPRETER_POINTS_PER_PROGRAM = 4096
INTERPRETER_PIXELS_PER_BLOCK = 65536


def _block_sizes(n_points: int, n_pixels: int) -> tuple[int, int]:
    if interpreter_enabled():
        points = min(INTERPRETER_POINTS_PER_PROGRAM, triton.next_power_of_2(max(n_points, 1)))
        pixels = min(INTERPRETER_PIXELS_PER_BLOCK, triton.next_power_of_2(n_pixels))
        return points, pixels
    return POINTS_PER_PROGRAM, PIXELS_PER_BLOCK


@triton.jit
def _splat_kernel(
    points_ptr,  # [B, N, 3] contiguous, float32 / float16 / bfloat16
    bases_ptr,  # [V, 3, 3] float32 contiguous
    lengths_ptr,  # [B] int64
    distance_ptr,  # [B] float32
    centers_ptr,  # [S] float32: NDC x of column centres (row centres are their negatives)
    zbuf_ptr,  # [B * V * S * S] float32, +inf initialised
    n_points,
    n_views,
    size,
    half_size,  # S / 2 as float32
    radius2,  # radius^2 as float32
    K: tl.constexpr,  # window half-width in pixels
    BLOCK: tl.constexpr,
):
    map_id = tl.program_id(0).to(tl.int64)
    cloud = map_id // n_views
    view = map_id % n_views
    idx = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    length = tl.load(lengths_ptr + cloud)
    in_cloud = (idx < n_points) & (idx < length)

    p = points_ptr + (cloud * n_points + idx) * 3
    px = tl.load(p, mask=in_cloud, other=0.0).to(tl.float32)
    py = tl.load(p + 1, mask=in_cloud, other=0.0).to(tl.float32)
    pz = tl.load(p + 2, mask=in_cloud, other=0.0).to(tl.float32)
    b = bases_ptr + view * 9
    u = px * tl.load(b + 0) + py * tl.load(b + 1) + pz * tl.load(b + 2)
    v = px * tl.load(b + 3) + py * tl.load(b + 4) + pz * tl.load(b + 5)
    z = px * tl.load(b + 6) + py * tl.load(b + 7) + pz * tl.load(b + 8) + tl.load(distance_ptr + cloud)
    # Drawn only in front of the camera plane (z > 0), as pytorch3d's rasterizer and the fixtures' `zbuf > 0`; false for NaN too.
    valid = in_cloud & (tl.abs(z) < float("inf")) & (z > 0.0)

    # The pixel holding the point, clamped so that far or non-finite points stay harmless integers.
    col0 = tl.minimum(tl.maximum(tl.floor((u + 1.0) * half_size), -K - 1.0), size + K * 1.0).to(tl.int32)
    row0 = tl.minimum(tl.maximum(tl.floor((1.0 - v) * half_size), -K - 1.0), size + K * 1.0).to(tl.int32)
    zrow = zbuf_ptr + map_id * size * size
    for i in tl.static_range(2 * K + 1):
        row = row0 + (i - K)
        row_in = (row >= 0) & (row < size)
        yc = -tl.load(centers_ptr + tl.minimum(tl.maximum(row, 0), size - 1))
        dy = yc - v
        dy2 = dy * dy
        for j in tl.static_range(2 * K + 1):
            col = col0 + (j - K)
            col_in = (col >= 0) & (col < size)
            dx = tl.load(centers_ptr + tl.minimum(tl.maximum(col, 0), size - 1)) - u
            covered = valid & row_in & col_in & (dx * dx + dy2 <= radius2)
            tl.atomic_min(zrow + row * size + col, z, mask=covered)


@triton.jit
def _normalize_kernel(
    zbuf_ptr,  # [M, P] float32, +inf = background
    out_ptr,  # [M, CHANNELS, P] out dtype
    n_pixels,
    scale,
    background,
    mean0,
    mean1,
    mean2,
    std0,
    std1,
    std2,
    CHANNELS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    map_id = tl.program_id(0).to(tl.int64)
    src = zbuf_ptr + map_id * n_pixels
    dst = out_ptr + map_id * CHANNELS * n_pixels
    lows = tl.full([BLOCK], float("inf"), tl.float32)
    highs = tl.full([BLOCK], float("-inf"), tl.float32)
    for start in range(0, n_pixels, BLOCK):
        idx = start + tl.arange(0, BLOCK)
        z = tl.load(src + idx, mask=idx < n_pixels, other=float("inf"))
        fg = z < float("inf")
        lows = tl.minimum(lows, z)
        highs = tl.maximum(highs, tl.where(fg, z, float("-inf")))
    low = tl.min(lows, axis=0)
    high = tl.max(highs, axis=0)
    denom = tl.where(high > 0.0, high, 1.0)
    # Background cells hold +inf; shifting them by a finite number avoids inf - inf (an empty map has low = +inf).
    shift = tl.where(low < float("inf"), low, 0.0)
    for start in range(0, n_pixels, BLOCK):
        idx = start + tl.arange(0, BLOCK)
        inside = idx < n_pixels
        z = tl.load(src + idx, mask=inside, other=float("inf"))
        fg = z < float("inf")
        depth = tl.where(fg, tl.math.div_rn(tl.where(fg, z, shift) - shift, denom) * scale, background)
        if CHANNELS == 1:
            tl.store(dst + idx, depth.to(out_ptr.dtype.element_ty), mask=inside)
        else:
            tl.store(dst + idx, tl.math.div_rn(depth - mean0, std0).to(out_ptr.dtype.element_ty), mask=inside)
            tl.store(
                dst + n_pixels + idx,
                tl.math.div_rn(depth - mean1, std1).to(out_ptr.dtype.element_ty),
                mask=inside,
            )
            tl.store(
                dst + 2 * n_pixels + idx,
                tl.math.div_rn(depth - mean2, std2).to(out_ptr.dtype.element_ty),
                mask=inside,
            )


def _f32(x: float) -> float:
    """x rounded to float32, as the reference's float32 constants are."""
    return float(torch.tensor(x, dtype=torch.float32))


def splat_zbuffer(inputs: RenderInputs) -> torch.Tensor:
    """Stage 1 alone: float32 [B, V, S*S], nearest depth per pixel, +inf where nothing covers it."""
    batch, n, views, size = inputs.batch, inputs.num_points, inputs.num_views, inputs.image_size
    device = inputs.points.device
    zbuf = torch.full((batch * views * size * size,), float("inf"), dtype=torch.float32, device=device)
    if batch * views * n > 0:
        block, _ = _block_sizes(n, size * size)
        grid = (batch * views, triton.cdiv(n, block))
        _splat_kernel[grid](
            inputs.points.contiguous(),
            inputs.bases.contiguous(),
            inputs.lengths.contiguous(),
            inputs.distance.contiguous(),
            pixel_centers(size, device),
            zbuf,
            n,
            views,
            size,
            _f32(size * 0.5),
            squared_radius(inputs.radius),
            K=window_radius(size, inputs.radius),
            BLOCK=block,
            num_warps=4,
            enable_fp_fusion=False,
        )
    return zbuf.view(batch, views, size * size)


def render_depth_triton(inputs: RenderInputs) -> torch.Tensor:
    """The Triton renderer: [B, V, channels, S, S] in `inputs.out_dtype` (same contract as the reference)."""
    batch, views, size, channels = inputs.batch, inputs.num_views, inputs.image_size, inputs.channels
    zbuf = splat_zbuffer(inputs)
    out = torch.empty(
        (batch, views, channels, size, size), dtype=inputs.out_dtype, device=inputs.points.device
    )
    if batch * views > 0:
        _, block = _block_sizes(inputs.num_points, size * size)
        _normalize_kernel[(batch * views,)](
            zbuf,
            out,
            size * size,
            _f32(DEPTH_SCALE),
            _f32(BACKGROUND),
            *(_f32(m) for m in CLIP_MEAN),
            *(_f32(s) for s in CLIP_STD),
            CHANNELS=channels,
            BLOCK=block,
            num_warps=8,
            enable_fp_fusion=False,
        )
    return out
