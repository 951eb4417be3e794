"""The paper's fixed camera views, their orthographic camera bases, and the up-axis rotation.

A view is (elevation, azimuth) in degrees; the camera sits at
    C = distance * (cos e sin a, sin e, cos e cos a)
and looks at the origin with world +y as "up". `camera_bases` turns views into 3x3 matrices whose
rows are the camera's right, up and forward unit vectors, so that for a point p (row vector):
    p @ basis.T = (u, v, z)   with   u: NDC x (right), v: NDC y (up), z + distance: depth.

The bases are exactly what pytorch3d's `look_at_view_transform` computes in float32, which is what
CLIP2Point's official renderer (and so its encoders and checkpoints) used. That matters at the
poles: float32 cos(90 deg) is -4.37e-8, so the camera of view (90, 0) sits just past the pole, and
pytorch3d's cross products (normalised with eps 1e-5, then its "x axis close to 0" fallback) give
an image "up" opposite to the limit taken from the equator side: views (90, 0) and (-90, 180) come
out rotated 180 degrees compared with a renderer that takes that limit. (270, 0) is unaffected
(float32 cos(270 deg) is +1.19e-8). pytorch3d's x axis points left in the image; `right` is its
negation.
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


def _normalize32(v: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """torch.nn.functional.normalize(v, eps=eps) in float32: v / max(|v|, eps)."""
    norm = np.sqrt(np.sum(v * v, dtype=np.float32), dtype=np.float32)
    return (v / max(norm, np.float32(eps))).astype(np.float32)


def camera_basis(elevation: float, azimuth: float) -> np.ndarray:
    """Rows: right, up, forward (float32) of a camera looking at the origin, as pytorch3d's
    `look_at_view_transform(dist, elev, azim)` computes them in float32 (see the module docstring)."""
    f32 = np.float32
    deg = f32(math.pi / 180.0)
    e, a, d = deg * f32(elevation), deg * f32(azimuth), f32(1.0)
    cos_e, sin_e = np.cos(e, dtype=f32), np.sin(e, dtype=f32)
    eye = np.array([d * cos_e * np.sin(a, dtype=f32), d * sin_e, d * cos_e * np.cos(a, dtype=f32)], dtype=f32)
    world_up = np.array([0.0, 1.0, 0.0], dtype=f32)
    z_axis = _normalize32(-eye)
    x_axis = _normalize32(np.cross(world_up, z_axis).astype(f32))
    y_axis = _normalize32(np.cross(z_axis, x_axis).astype(f32))
    if np.all(np.abs(x_axis) <= f32(5e-3)):  # pytorch3d: torch.isclose(x_axis, 0, atol=5e-3).all()
        x_axis = _normalize32(np.cross(y_axis, z_axis).astype(f32))
    return np.stack([-x_axis, y_axis, z_axis]).astype(f32)


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


def describe_up_axis(up: str) -> str:
    """One line saying what `apply_up_axis(points, up)` does, for reports."""
    if up == "z":
        return "up axis z: the ModelNet rotation points @ Rx(+90) @ Ry(-90)"
    if up == "y":
        return "up axis y: no rotation"
    raise OptionError(Opt("up"), f" must be one of {', '.join(UP_AXES)}, got {up!r}")


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
