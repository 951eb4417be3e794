"""The paper's fixed camera views, their orthographic camera bases, and the up-axis rotation.

A view is (elevation, azimuth) in degrees; the camera sits at
    C = distance * (cos e sin a, sin e, cos e cos a)
and looks at the origin with world +y as "up" (the PyTorch3D convention the paper used).
`camera_bases` turns views into 3x3 matrices whose rows are the camera's right, up and forward
unit vectors, so that for a point p (row vector):
    p @ basis.T = (u, v, z)   with   u: NDC x (right), v: NDC y (up), z + distance: depth.
At the poles (cos e = 0) "up" is undefined; we use the limit of the formula as the elevation
approaches the pole from the equator side, so the basis is continuous in azimuth.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import Opt, OptionError

View = tuple[float, float]

ZERO_SHOT_VIEWS_6: tuple[View, ...] = ((0, 0), (0, 90), (0, 180), (0, 270), (90, 0), (-90, 180))
FEW_SHOT_VIEWS_10: tuple[View, ...] = (
    (0, 0), (90, 0), (180, 0), (270, 0), (225, -45), (225, 45), (315, -45), (315, 45), (0, -90), (0, 90),
)
PRESETS: dict[int, tuple[View, ...]] = {6: ZERO_SHOT_VIEWS_6, 10: FEW_SHOT_VIEWS_10}


def view_preset(n: int) -> tuple[View, ...]:
    """The 6-view (zero-shot) or 10-view (few-shot, pre-training) preset of the paper."""
    if n not in PRESETS:
        raise OptionError(Opt("views"), f" must be one of {sorted(PRESETS)}, got {n}")
    return PRESETS[n]


def camera_basis(elevation: float, azimuth: float) -> np.ndarray:
    """Rows: right, up, forward (unit vectors, float64) of a camera looking at the origin."""
    e, a = math.radians(elevation), math.radians(azimuth)
    cos_e = math.cos(e)
    forward = -np.array([cos_e * math.sin(a), math.sin(e), cos_e * math.cos(a)])
    # right = normalise(forward x world_up) has the closed form sign(cos e) * (cos a, 0, -sin a);
    # using it directly avoids the 0/0 of the cross product at the poles.
    sign = -1.0 if cos_e < -1e-9 else 1.0
    right = sign * np.array([math.cos(a), 0.0, -math.sin(a)])
    up = np.cross(right, forward)
    return np.stack([right, up, forward])


def camera_bases(views: tuple[View, ...] | list[View] | int, *, dtype=None, device=None):
    """[V, 3, 3] torch tensor of camera bases (float32 unless `dtype`) for a preset size or a list of views."""
    import torch  # views.py stays numpy-only for the torch-free ONNX Runtime path

    if isinstance(views, int):
        views = view_preset(views)
    bases = np.stack([camera_basis(e, a) for e, a in views])
    return torch.as_tensor(bases, dtype=dtype or torch.float32, device=device)


def _rx(deg: float) -> np.ndarray:
    t = math.radians(deg)
    c, s = math.cos(t), math.sin(t)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(deg: float) -> np.ndarray:
    t = math.radians(deg)
    c, s = math.cos(t), math.sin(t)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


# ModelNet (z-up) shapes are turned y-up before rendering: `points @ Rx(+90) @ Ry(-90)` (row vectors).
Z_UP_ROTATION = (_rx(90.0) @ _ry(-90.0)).astype(np.float32)

UP_AXES = ("z", "y")


def apply_up_axis(points: np.ndarray, up: str) -> np.ndarray:
    """Rotate a cloud so that its `up` axis becomes the renderer's +y.

    `z`: ModelNet, most scanners and CAD (the paper's ModelNet rotation); `y`: ShapeNet-style
    data that is already y-up (no rotation).
    """
    if up == "y":
        return points
    if up == "z":
        return (points @ Z_UP_ROTATION).astype(points.dtype, copy=False)
    raise OptionError(Opt("up"), f" must be one of {', '.join(UP_AXES)}, got {up!r}")
