"""Pure-torch z-buffer splatting: the CPU path, the ONNX export path and the Triton kernel's oracle.

A point covers the pixels whose centre lies within `radius` (NDC) of it: `dx*dx + dy*dy <= r^2`
in float32, with dx, dy measured from the shared pixel-centre table (`inputs.pixel_centers`);
points at or behind the camera plane (depth z <= 0) are not drawn, as in pytorch3d, so every
foreground depth is positive and max_fg > 0 (the division still guards against 0). The nearest
covering point wins, and each map is normalised: d' = (d - min_fg) / max_fg * 200/255 on covered
pixels, 1.0 elsewhere. Two strategies compute exactly these maps (tests/render/test_compact.py
requires them to be bit for bit equal, and equal to the frozen pre-compact renderer):

- compact (CPU tensors, eager; the default there). Clouds are processed a few at a time so that
  their z-buffer stays in cache. A point visits only the w x w pixels whose centres can lie within
  its disk (w = floor(2 * (radius_px + slack)) + 1: 5 x 5 at 224 px instead of 7 x 7), with the
  window pushed inside the image, so no candidate needs an in-image test. The candidates are laid
  out window position first and points last, so that every elementwise op runs over long
  contiguous rows; only the covered ones (nonzero) are gathered and scattered (`amin`) into the
  chunk's z-buffer, and the chunk is normalised in place while it is still in cache.
- dense (while exporting to ONNX or compiling, and on other devices): every point visits the
  (2k+1)^2 pixels around its own pixel, and one `amin` scatter into a flat +inf z-buffer of B*V*S*S
  cells (plus one dump cell that absorbs padded, non-finite and off-image candidates) keeps the
  nearest depth per pixel.

ONNX export (tests/render/test_onnx_export.py; torch 2.14, onnxruntime 1.32) runs the dense strategy: it
is traceable (no .item(), no branching on values; padding is masked into the dump cell). Both
exporters work at opset 18, the first where `scatter_reduce_(reduce="amin")` becomes
ScatterElements(reduction="min"):
  - `torch.onnx.export(module, (points, lengths), dynamo=True, opset_version=18,
    dynamic_shapes={"points": {0: Dim("batch")}, "lengths": {0: Dim("batch")}}).save(path)`
    (the default exporter of torch 2.14);
  - `torch.onnx.export(module, args, path, dynamo=False, opset_version=18, input_names=...,
    dynamic_axes={"points": {0: "batch"}, ...})` (TorchScript exporter, still present).
Both keep the batch dimension dynamic: while exporting (or compiling) the whole batch is one
chunk, with no Python arithmetic on its size. Views, image size, radius and channels are baked in.
"""

from __future__ import annotations

import math
import sys

import torch

from clip2point.defaults import BACKGROUND, CLIP_MEAN, CLIP_STD, DEPTH_SCALE

from .inputs import RenderInputs, pixel_centers, squared_radius, window_radius

# Dense strategy: upper bound on the candidate (cloud, view, point, window pixel) cells held at
# once: ~2^23 cells cost ~150 MB of indices, values and masks; B=256, N=1024, V=10 at 224 px is
# ~1.3e8 cells.
MAX_CELLS_PER_CHUNK = 1 << 23
# Compact strategy: a chunk's z-buffer (8 MB: 4 clouds x 10 views at 224 px) and its candidate
# cells (~10 bytes each across the float distances, int32 pixel table and mask) stay in the L3
# cache of a small CPU; more clouds per chunk measured no faster, fewer cost Python overhead.
ZBUF_CELLS_PER_CHUNK = 1 << 21
CANDIDATES_PER_CHUNK = 1 << 21
# Point-views projected at once (~40 bytes each with temporaries): one set of ops for the whole
# batch of the usual sizes instead of one per chunk.
PROJECTED_PER_GROUP = 1 << 20
# Extra reach of the compact window beyond the radius, in pixels: far more than the float32
# rounding of the coverage test (~S * 2^-22 px), so the window holds every pixel the test accepts.
WINDOW_SLACK_PX = 1.0 / 64.0
INT32_LIMIT = 1 << 31


def _exporting() -> bool:
    # torch imports torch.onnx on first use (0.6 s of a cold start): not imported, not exporting.
    onnx = sys.modules.get("torch.onnx")
    return (onnx is not None and onnx.is_in_onnx_export()) or torch.compiler.is_compiling() or torch.jit.is_tracing()


def use_compact(inputs: RenderInputs) -> bool:
    """True where the compact strategy runs: eager CPU tensors (not exporting, compiling or tracing).

    Points that require gradients keep the dense strategy, which autograd can differentiate
    (through the depths); the compact one works in place.
    """
    if inputs.points.device.type != "cpu" or _exporting():
        return False
    return not (torch.is_grad_enabled() and (inputs.points.requires_grad or inputs.distance.requires_grad))


def project(points: torch.Tensor, bases: torch.Tensor, distance: torch.Tensor):
    """(u, v, z), each float32 [B, V, N], for float points [B, N, 3] and bases [V, 3, 3].

    Written as explicit products and sums (not a matmul) so that the Triton kernel, which does the
    same operations in the same order, gets bit-identical coordinates.
    """
    p = points.to(torch.float32)
    px, py, pz = p[:, None, :, 0], p[:, None, :, 1], p[:, None, :, 2]  # [B, 1, N]
    b = bases[:, :, :, None]  # [V, 3, 3, 1]: row r, column c -> [V, 1]
    u = px * b[:, 0, 0] + py * b[:, 0, 1] + pz * b[:, 0, 2]
    v = px * b[:, 1, 0] + py * b[:, 1, 1] + pz * b[:, 1, 2]
    z = px * b[:, 2, 0] + py * b[:, 2, 1] + pz * b[:, 2, 2] + distance[:, None, None]
    return u, v, z


def _splat_dense(
    zbuf: torch.Tensor,
    points: torch.Tensor,
    lengths: torch.Tensor,
    distance: torch.Tensor,
    first_map: int,
    bases: torch.Tensor,
    image_size: int,
    radius: float,
) -> None:
    """Dense: scatter the nearest depth of the clouds `points` [c, N, 3] into `zbuf` (flat, in place)."""
    size = image_size
    num_views = bases.shape[0]
    k = window_radius(size, radius)
    dump = zbuf.shape[0] - 1
    centers = pixel_centers(size, points.device)
    offsets = torch.arange(-k, k + 1, device=points.device)

    u, v, z = project(points, bases, distance)  # [c, V, N]
    index = torch.arange(points.shape[1], device=points.device)
    # Only points in front of the camera plane are drawn (pytorch3d skips z < 0 and its maps treat
    # z == 0 as background): with the pre-training zoom (distance d < 1) part of a cloud is behind it.
    valid = (index[None, None, :] < lengths[:, None, None]) & torch.isfinite(z) & (z > 0)

    half = size * 0.5
    # The pixel holding the point; clamped so that far-away or non-finite points give harmless
    # (off-image, then masked) integers rather than overflowing the conversion.
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
    """[M, P] z-buffer (+inf = empty) -> [M, channels, P] normalised maps in `out_dtype`."""
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


def zbuffer_dense(inputs: RenderInputs) -> torch.Tensor:
    """Dense strategy: float32 [B, V, S*S], nearest depth per pixel, +inf where no point covers it."""
    batch, n, views, size = inputs.batch, inputs.num_points, inputs.num_views, inputs.image_size
    cells = size * size
    zbuf = torch.full(
        (batch * views * cells + 1,), float("inf"), dtype=torch.float32, device=inputs.points.device
    )
    width = 2 * window_radius(size, inputs.radius) + 1
    chunk = max(1, MAX_CELLS_PER_CHUNK // max(1, views * n * width * width))
    args = (inputs.bases, size, inputs.radius)
    if _exporting():
        # One chunk and no Python arithmetic on the batch size, so that it stays a dynamic dimension.
        _splat_dense(zbuf, inputs.points, inputs.lengths, inputs.distance, 0, *args)
    else:
        for start in range(0, batch, chunk):
            stop = min(start + chunk, batch)
            part = slice(start, stop)
            _splat_dense(
                zbuf, inputs.points[part], inputs.lengths[part], inputs.distance[part], start * views, *args
            )
    return zbuf[:-1].view(batch, views, cells)


def render_depth_dense(inputs: RenderInputs) -> torch.Tensor:
    """Dense strategy (the export path): [B, V, channels, S, S] in `inputs.out_dtype`."""
    batch, views, size = inputs.batch, inputs.num_views, inputs.image_size
    zbuf = zbuffer_dense(inputs)
    out = normalize_depth(zbuf.reshape(batch * views, size * size), inputs.channels, inputs.out_dtype)
    return out.view(batch, views, inputs.channels, size, size)


def compact_window(image_size: int, radius: float) -> tuple[int, float]:
    """Width w (pixels) of the compact window, and how far (pixels) its first centre may lie before the point.

    A pixel whose centre is within radius_px of the point's x (pixel units) lies in
    [x - radius_px, x + radius_px], which holds at most floor(2 * radius_px) + 1 centres. The
    float32 coverage test may accept a centre up to ~S * 2^-22 px further out, so the interval is
    widened by a slack far larger than that; a window wider than the image is the image.
    """
    radius_px = radius * image_size / 2.0
    slack = WINDOW_SLACK_PX + image_size * 2.0**-16
    width = min(image_size, int(math.floor(2.0 * (radius_px + slack))) + 1)
    return width, radius_px + slack + 0.5


def _window_starts(coord: torch.Tensor, size: int, width: int, reach: float) -> torch.Tensor:
    """int32 first pixel of each point's window along one axis, `coord` = position in pixel units.

    The first centre j + 0.5 at or after coord - radius_px - slack (coord in float64, whose
    rounding is negligible against the slack). Clamping it into [0, S - w] keeps every pixel of the
    window in the image and still holds all in-image pixels of the unclamped window; NaN and
    infinite coordinates (non-finite or overflowing points) get a harmless in-image window.
    """
    start = torch.ceil(coord - reach).clamp_(0, size - width).nan_to_num_(0.0)
    return start.to(torch.int32)


def _prepare(
    points: torch.Tensor,
    lengths: torch.Tensor,
    distance: torch.Tensor,
    first_point: int,
    bases: torch.Tensor,
    image_size: int,
    radius: float,
) -> tuple[torch.Tensor, ...]:
    """Compact: u, v, z and each window's first column and row (int32), all [c, V, n], for points [c, n, 3].

    `first_point` is the index of points[:, 0] in its cloud (for `lengths`). v is NaN for points
    that are not drawn (padding, non-finite, at or behind the camera plane): a NaN row distance
    makes every dist2 NaN, which `<=` rejects, so no mask over the candidates is needed.
    """
    size = image_size
    width, reach = compact_window(size, radius)
    u, v, z = project(points, bases, distance)  # [c, V, n]
    n = points.shape[1]
    index = torch.arange(first_point, first_point + n, device=points.device)
    valid = (index[None, None, :] < lengths[:, None, None]) & torch.isfinite(z) & (z > 0)
    v = torch.where(valid, v, float("nan"))
    half = size * 0.5
    col0 = _window_starts((u.double() + 1.0) * half, size, width, reach)
    row0 = _window_starts((1.0 - v.double()) * half, size, width, reach)
    return u, v, z, col0, row0


def _splat_compact(
    zbuf: torch.Tensor,
    prepared: tuple[torch.Tensor, ...],
    image_size: int,
    radius: float,
    centers: torch.Tensor,
) -> None:
    """Compact: scatter the nearest depth of `_prepare`d points (c clouds) into their z-buffer zbuf [c*V*S*S]."""
    size = image_size
    width, _ = compact_window(size, radius)
    u, v, z, col0, row0 = (t.reshape(-1) for t in prepared)
    clouds, views, n = prepared[0].shape
    count = u.shape[0]
    steps = torch.arange(width, dtype=torch.int32, device=u.device)[:, None]
    cols = col0 + steps  # [w, count]: window column i of every point
    rows = row0 + steps
    # The same float32 operations as the dense strategy and the Triton kernel: dx = x_col - u,
    # dy = (-x_row) - v, dist2 = dx*dx + dy*dy (addition commutes exactly).
    dx = centers.index_select(0, cols.view(-1)).view(width, count) - u
    dy = (-centers).index_select(0, rows.view(-1)).view(width, count) - v
    dist2 = (dy * dy)[:, None, :] + (dx * dx)[None, :, :]  # [w rows, w cols, count]
    covered = (dist2.view(-1) <= squared_radius(radius)).nonzero().squeeze(1)

    index_dtype = torch.int32 if zbuf.shape[0] < INT32_LIMIT else torch.int64
    maps = torch.arange(clouds * views, dtype=index_dtype, device=u.device) * (size * size)
    row_base = rows.to(index_dtype) * size + maps.repeat_interleave(n)  # [w, count]
    pixel = (row_base[:, None, :] + cols[None, :, :]).view(-1).index_select(0, covered)
    depth = z.repeat(width * width).index_select(0, covered)
    zbuf.scatter_reduce_(0, pixel.to(torch.int64), depth, reduce="amin", include_self=True)


def _compact_chunks(inputs: RenderInputs, target: torch.Tensor | None = None):
    """Yield (first cloud, end cloud, z-buffer [m, S*S]) chunk by chunk (compact strategy).

    Without `target` one cache-sized buffer is reused: each z-buffer is valid until the next chunk.
    With `target` (float32 [B*V*S*S]) the chunks are written into it. Points are projected for
    several chunks at once where they fit (fewer, longer ops), else per chunk and part of a cloud.
    """
    batch, n, views, size = inputs.batch, inputs.num_points, inputs.num_views, inputs.image_size
    cells = size * size
    width, _ = compact_window(size, inputs.radius)
    per_cloud = max(1, views * n * width * width)
    clouds = max(
        1, min(batch, ZBUF_CELLS_PER_CHUNK // max(1, views * cells), CANDIDATES_PER_CHUNK // per_cloud)
    )
    points_per_part = max(1, CANDIDATES_PER_CHUNK // max(1, clouds * views * width * width))
    group = clouds * max(1, PROJECTED_PER_GROUP // max(1, clouds * views * n))
    device = inputs.points.device
    centers = pixel_centers(size, device)
    geometry = (inputs.bases, size, inputs.radius)
    buffer = None
    if target is None:
        buffer = torch.empty(clouds * views * cells, dtype=torch.float32, device=device)
    for group_start in range(0, batch, group):
        group_stop = min(group_start + group, batch)
        prepared = None
        if n <= points_per_part:
            part = slice(group_start, group_stop)
            prepared = _prepare(
                inputs.points[part], inputs.lengths[part], inputs.distance[part], 0, *geometry
            )
        for start in range(group_start, group_stop, clouds):
            stop = min(start + clouds, group_stop)
            if buffer is None:
                zbuf = target[start * views * cells : stop * views * cells]
            else:
                zbuf = buffer[: (stop - start) * views * cells]
            zbuf.fill_(float("inf"))
            if prepared is not None:
                rows = slice(start - group_start, stop - group_start)
                _splat_compact(zbuf, tuple(t[rows] for t in prepared), size, inputs.radius, centers)
            else:
                for first in range(0, n, points_per_part):
                    chunk = (slice(start, stop), slice(first, first + points_per_part))
                    part = _prepare(
                        inputs.points[chunk],
                        inputs.lengths[start:stop],
                        inputs.distance[start:stop],
                        first,
                        *geometry,
                    )
                    _splat_compact(zbuf, part, size, inputs.radius, centers)
            yield start, stop, zbuf.view((stop - start) * views, cells)


def _normalize_into(out: torch.Tensor, zbuf: torch.Tensor, channels: int) -> None:
    """out [m, channels, P] (its own dtype) <- the maps of zbuf [m, P] (+inf = empty; zbuf is overwritten).

    The same float32 operations as `normalize_depth`, in place: the minimum needs no mask (empty
    pixels hold +inf, the identity of min); turning them into -inf gives the foreground maximum
    the same way, and -inf stays -inf through (d - min) / max * scale (also for an empty map,
    where min = +inf) until it becomes the background value. Foreground values are finite.
    """
    device = zbuf.device
    low = zbuf.amin(dim=-1, keepdim=True)
    zbuf.nan_to_num_(posinf=float("-inf"))
    high = zbuf.amax(dim=-1, keepdim=True)
    one = torch.ones((), dtype=torch.float32, device=device)
    denom = torch.where(high > 0, high, one)
    scale = torch.tensor(DEPTH_SCALE, dtype=torch.float32, device=device)
    zbuf.sub_(low).div_(denom)
    if channels == 1 and out.dtype == torch.float32:
        depth = torch.mul(zbuf, scale, out=out[:, 0])
        depth.nan_to_num_(neginf=BACKGROUND)
        return
    depth = zbuf.mul_(scale).nan_to_num_(neginf=BACKGROUND)[:, None, :]
    if channels == 1:
        out.copy_(depth)
        return
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32, device=device)[:, None]
    std = torch.tensor(CLIP_STD, dtype=torch.float32, device=device)[:, None]
    if out.dtype == torch.float32:
        torch.sub(depth, mean, out=out).div_(std)
    else:
        out.copy_((depth - mean).div_(std))


def zbuffer(inputs: RenderInputs) -> torch.Tensor:
    """float32 [B, V, S*S]: nearest depth per pixel, +inf where no point covers it."""
    if not use_compact(inputs):
        return zbuffer_dense(inputs)
    batch, views, size = inputs.batch, inputs.num_views, inputs.image_size
    zbuf = torch.empty(batch * views * size * size, dtype=torch.float32, device=inputs.points.device)
    for _ in _compact_chunks(inputs, target=zbuf):
        pass
    return zbuf.view(batch, views, size * size)


def render_depth_torch(inputs: RenderInputs) -> torch.Tensor:
    """The reference renderer: [B, V, channels, S, S] in `inputs.out_dtype`."""
    if not use_compact(inputs):
        return render_depth_dense(inputs)
    batch, views, size, channels = inputs.batch, inputs.num_views, inputs.image_size, inputs.channels
    cells = size * size
    out = torch.empty((batch * views, channels, cells), dtype=inputs.out_dtype, device=inputs.points.device)
    for start, stop, zbuf in _compact_chunks(inputs):
        _normalize_into(out[start * views : stop * views], zbuf, channels)
    return out.view(batch, views, channels, size, size)
