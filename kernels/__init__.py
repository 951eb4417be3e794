"""Depth rendering of point clouds (the CLIP2Point paper's orthographic z-buffer splats).

`render_depth` validates its arguments once (clip2point.kernels.inputs), picks a backend (clip2point.kernels._backend)
and runs either the pure-torch reference (clip2point.kernels.reference: CPU, ONNX export, test oracle) or the
Triton kernel (clip2point.kernels.triton_depth, imported only when used). Both give the same foreground
masks and the same depth values up to float rounding.
"""

from __future__ import annotations

import torch

from clip2point.defaults import CAMERA_DISTANCE, IMAGE_SIZE, POINT_RADIUS

from ._backend import BACKENDS, resolve_backend
from .inputs import check_inputs

__all__ = ["BACKENDS", "render_depth", "resolve_backend"]


def render_depth(
    points: torch.Tensor,
    bases: torch.Tensor,
    *,
    lengths: torch.Tensor | None = None,
    image_size: int = IMAGE_SIZE,
    radius: float = POINT_RADIUS,
    distance: float | torch.Tensor = CAMERA_DISTANCE,
    channels: int = 1,
    out_dtype: torch.dtype | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Render clouds [B, N, 3] from views `bases` [V, 3, 3] into depth maps [B, V, channels, S, S].

    `bases` come from `clip2point.views.camera_bases` (rows right, up, forward): a point p lands at
    NDC (p . right, p . up) with depth p . forward + distance (`distance`: a number or one per
    cloud, [B]). It covers the pixels whose centres lie within `radius` (NDC); the nearest covering
    point wins. Per map, covered pixels get (d - min) / max * 200/255 and the rest 1.0.
    `channels=3` copies the map to 3 channels normalised with CLIP's mean / std.
    Points at index >= `lengths[b]` are padding. Inputs float32 / float16 / bfloat16 (computed in
    float32); output `out_dtype` (default float32). `backend`: "auto" (Triton for CUDA tensors when
    triton imports, else torch; C2P_RENDER_BACKEND overrides "auto"), "torch" or "triton".
    Raises `UsageError` for bad shapes or options, `BackendUnavailableError` for an unusable backend.
    """
    inputs = check_inputs(
        points,
        bases,
        lengths=lengths,
        image_size=image_size,
        radius=radius,
        distance=distance,
        channels=channels,
        out_dtype=out_dtype,
    )
    if resolve_backend(backend, points.device) == "triton":
        from .triton_depth import render_depth_triton

        return render_depth_triton(inputs)
    from .reference import render_depth_torch

    return render_depth_torch(inputs)
