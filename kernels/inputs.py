"""Checks and normalises the arguments of `render_depth`, and the geometry both backends share.

Both backends take the same `RenderInputs` and the same pixel-centre table and window radius,
so that their coverage tests are the same float32 operations on the same numbers: the foreground
masks of the torch reference and the Triton kernel are then identical, not merely close.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from clip2point.defaults import CAMERA_DISTANCE, IMAGE_SIZE, POINT_RADIUS
from clip2point.errors import UsageError

INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
OUTPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
CHANNELS = (1, 3)


@dataclass(frozen=True)
class RenderInputs:
    """Validated arguments: points in their own dtype, everything else float32 / int64 on one device."""

    points: torch.Tensor  # [B, N, 3], float32 / float16 / bfloat16 (read as float32)
    bases: torch.Tensor  # [V, 3, 3] float32, rows right, up, forward
    lengths: torch.Tensor  # [B] int64; points at index >= lengths[b] are padding
    distance: torch.Tensor  # [B] float32, added to p . forward
    image_size: int
    radius: float
    channels: int
    out_dtype: torch.dtype

    @property
    def batch(self) -> int:
        return self.points.shape[0]

    @property
    def num_points(self) -> int:
        return self.points.shape[1]

    @property
    def num_views(self) -> int:
        return self.bases.shape[0]


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(d) for d in t.shape) + "]"


def check_inputs(
    points: torch.Tensor,
    bases: torch.Tensor,
    *,
    lengths: torch.Tensor | None = None,
    image_size: int = IMAGE_SIZE,
    radius: float = POINT_RADIUS,
    distance: float | torch.Tensor = CAMERA_DISTANCE,
    channels: int = 1,
    out_dtype: torch.dtype | None = None,
) -> RenderInputs:
    """Validate the arguments of `render_depth` (raising `UsageError` naming the shapes) and normalise them.

    Only shapes, dtypes and devices are checked, never tensor values, so that the check neither
    synchronises a GPU nor breaks ONNX tracing: `lengths` outside [0, N] act as if clamped.
    """
    if not isinstance(points, torch.Tensor) or points.dim() != 3 or points.shape[-1] != 3:
        got = _shape(points) if isinstance(points, torch.Tensor) else type(points).__name__
        raise UsageError(f"render_depth: points must be [B, N, 3], got {got}")
    if points.dtype not in INPUT_DTYPES:
        raise UsageError(f"render_depth: points must be float32, float16 or bfloat16, got {points.dtype}")
    if not isinstance(bases, torch.Tensor) or bases.dim() != 3 or tuple(bases.shape[1:]) != (3, 3):
        got = _shape(bases) if isinstance(bases, torch.Tensor) else type(bases).__name__
        raise UsageError(f"render_depth: bases must be [V, 3, 3] (views.camera_bases), got {got}")
    if not bases.is_floating_point():
        raise UsageError(f"render_depth: bases must be floating point, got {bases.dtype}")
    device = points.device
    if bases.device != device:
        raise UsageError(f"render_depth: bases are on {bases.device} but points are on {device}")
    batch = points.shape[0]
    if lengths is None:
        lengths = torch.full((batch,), points.shape[1], dtype=torch.int64, device=device)
    else:
        if not isinstance(lengths, torch.Tensor) or lengths.dim() != 1 or lengths.shape[0] != batch:
            got = _shape(lengths) if isinstance(lengths, torch.Tensor) else type(lengths).__name__
            raise UsageError(
                f"render_depth: lengths must be [B] = [{batch}] for points {_shape(points)}, got {got}"
            )
        if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
            raise UsageError(f"render_depth: lengths must be an integer tensor, got {lengths.dtype}")
        if lengths.device != device:
            raise UsageError(f"render_depth: lengths are on {lengths.device} but points are on {device}")
        lengths = lengths.to(torch.int64)
    if isinstance(distance, torch.Tensor):
        if distance.dim() == 0:
            distance = distance.reshape(1).expand(batch)
        elif distance.dim() != 1 or distance.shape[0] != batch:
            raise UsageError(
                f"render_depth: distance must be a number or a [B] = [{batch}] tensor, got {_shape(distance)}"
            )
        if distance.device != device:
            raise UsageError(f"render_depth: distance is on {distance.device} but points are on {device}")
        distance = distance.to(torch.float32)
    else:
        distance = torch.full((batch,), float(distance), dtype=torch.float32, device=device)
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise UsageError(f"render_depth: image_size must be a positive integer, got {image_size!r}")
    radius = float(radius)
    if not (radius > 0.0 and math.isfinite(radius)):
        raise UsageError(f"render_depth: radius must be a positive number (NDC units), got {radius!r}")
    if channels not in CHANNELS:
        raise UsageError(f"render_depth: channels must be 1 or 3, got {channels!r}")
    out_dtype = torch.float32 if out_dtype is None else out_dtype
    if out_dtype not in OUTPUT_DTYPES:
        raise UsageError(f"render_depth: out_dtype must be float32, float16 or bfloat16, got {out_dtype}")
    return RenderInputs(
        points=points,
        bases=bases.to(torch.float32),
        lengths=lengths,
        distance=distance,
        image_size=image_size,
        radius=radius,
        channels=channels,
        out_dtype=out_dtype,
    )


def pixel_centers(image_size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """float32 [S]: NDC x of the centre of column j, `-1 + (2j + 1) / S`.

    Row i's centre is `y_i = 1 - (2i + 1) / S = -x_i`, exactly (IEEE rounding is symmetric), so
    one table serves rows and columns. The Triton kernel reads this very table.
    """
    odd = torch.arange(image_size, device=device, dtype=torch.float32) * 2.0 + 1.0
    return odd / float(image_size) - 1.0


def window_radius(image_size: int, radius: float) -> int:
    """Half-width k (pixels) of the (2k+1)^2 window around a point's pixel that holds all pixels it may cover.

    A point lies in pixel j0 = floor((u + 1) * S / 2), at most half a pixel from its centre, so a
    covered pixel is at most radius_px + 1/2 away from j0; one more pixel absorbs float rounding.
    The exact coverage test decides; the window only has to be large enough.
    """
    radius_px = radius * image_size / 2.0
    return int(math.floor(radius_px + 0.5)) + 1


def squared_radius(radius: float) -> float:
    """radius^2 as the float32 number both backends compare against."""
    return float(torch.tensor(radius * radius, dtype=torch.float32))
