"""Pure-torch z-buffer splatting: the CPU path, the ONNX export path and the Triton kernel's oracle.

Every point of every cloud is projected into every view at once; each point then visits the
(2k+1)^2 pixels around its own pixel, keeps those whose centre lies within `radius` (NDC), and an
`amin` scatter into a flat +inf z-buffer of B*V*S*S cells (plus one dump cell that absorbs padded,
non-finite and off-image candidates) keeps the nearest depth per pixel. Each map is then
normalised: d' = (d - min_fg) / max_fg * 200/255 on covered pixels, 1.0 elsewhere.

Points at or behind the camera plane (depth z <= 0) are not drawn, as in pytorch3d: so every
foreground depth is positive and max_fg > 0 (the division still guards against 0).

ONNX export (tests/test_render_onnx.py; torch 2.14, onnxruntime 1.32): the code is traceable (no
.item(), no branching on values; padding is masked into the dump cell). Both exporters work at
opset 18, the first where `scatter_reduce_(reduce="amin")` becomes ScatterElements(reduction="min"):
  - `torch.onnx.export(module, (points, lengths), dynamo=True, opset_version=18,
    dynamic_shapes={"points": {0: Dim("batch")}, "lengths": {0: Dim("batch")}}).save(path)`
    (the default exporter of torch 2.14);
  - `torch.onnx.export(module, args, path, dynamo=False, opset_version=18, input_names=...,
    dynamic_axes={"points": {0: "batch"}, ...})` (TorchScript exporter, still present).
Both keep the batch dimension dynamic: while exporting (or compiling) the whole batch is one
chunk, with no Python arithmetic on its size. Views, image size, radius and channels are baked in.
"""

from __future__ import annotations

import torch

from clip2point.defaults import BACKGROUND, CLIP_MEAN, CLIP_STD, DEPTH_SCALE

from .inputs import RenderInputs, pixel_centers, squared_radius, window_radius

# Upper bound on the candidate (cloud, view, point, window pixel) cells held at once: ~2^23 cells
# cost ~150 MB of indices, values and masks; B=256, N=1024, V=10 at 224 px is ~1.3e8 cells.
MAX_CELLS_PER_CHUNK = 1 << 23


def _exporting() -> bool:
    return torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()


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


def _splat(
    zbuf: torch.Tensor,
    points: torch.Tensor,
    lengths: torch.Tensor,
    distance: torch.Tensor,
    first_map: int,
    bases: torch.Tensor,
    image_size: int,
    radius: float,
) -> None:
    """Scatter the nearest depth of the clouds `points` [c, N, 3] into `zbuf` (flat, in place)."""
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


def zbuffer(inputs: RenderInputs) -> torch.Tensor:
    """float32 [B, V, S*S]: nearest depth per pixel, +inf where no point covers it."""
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
        _splat(zbuf, inputs.points, inputs.lengths, inputs.distance, 0, *args)
    else:
        for start in range(0, batch, chunk):
            stop = min(start + chunk, batch)
            part = slice(start, stop)
            _splat(
                zbuf, inputs.points[part], inputs.lengths[part], inputs.distance[part], start * views, *args
            )
    return zbuf[:-1].view(batch, views, cells)


def render_depth_torch(inputs: RenderInputs) -> torch.Tensor:
    """The reference renderer: [B, V, channels, S, S] in `inputs.out_dtype`."""
    batch, views, size = inputs.batch, inputs.num_views, inputs.image_size
    zbuf = zbuffer(inputs)
    out = normalize_depth(zbuf.reshape(batch * views, size * size), inputs.channels, inputs.out_dtype)
    return out.view(batch, views, inputs.channels, size, size)
