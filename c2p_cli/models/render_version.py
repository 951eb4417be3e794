"""What identifies the renderer's output: a version number and a hash of every render setting.

Weights trained on rendered depth maps (the shipped `c2p-demo` model, pre-trained depth encoders)
are only valid for the renderer they saw. They record `render_settings_hash()` in their metadata,
and a test fails when the shipped weights were trained with other settings: retrain them
(`make demo-model`).

Bump RENDER_VERSION with any change to what `clip2point.kernels.render_depth` draws that the
settings below do not capture (splat shape, culling, the z-buffer rule, the normalisation formula).
The camera bases are hashed from their values, so a change of views or of the basis convention
changes the hash by itself.
History: 1 = the first renderer (pole views as the limit from the equator, every point drawn);
2 = pytorch3d's float32 pole orientation and no points at or behind the camera plane (z <= 0).
"""

from __future__ import annotations

import hashlib
import json

from .. import defaults

RENDER_VERSION = 2
# Decimals kept of the camera bases: enough to see any change of view or convention, few enough
# that float32 trigonometry differing by an ulp between numpy builds never changes the hash.
_BASIS_DECIMALS = 5


def _rounded_bases(views) -> list[list[list[float]]]:
    from ..views import camera_basis

    # "+ 0.0" turns -0.0 into 0.0: the sign of a rounded-away pole residue is not a setting.
    return [[[round(float(x), _BASIS_DECIMALS) + 0.0 for x in row] for row in camera_basis(e, a)] for e, a in views]


def render_settings() -> dict:
    """Every setting the depth maps depend on: version, views and their bases, size, radius, scaling."""
    from ..views import PRESETS

    return {
        "render_version": RENDER_VERSION,
        "image_size": defaults.IMAGE_SIZE,
        "radius": defaults.POINT_RADIUS,
        "camera_distance": defaults.CAMERA_DISTANCE,
        "depth_scale": defaults.DEPTH_SCALE,
        "background": defaults.BACKGROUND,
        "clip_mean": list(defaults.CLIP_MEAN),
        "clip_std": list(defaults.CLIP_STD),
        "basis_convention": "rows right, up, forward; pytorch3d look_at_view_transform in float32",
        "views": {str(n): [list(map(float, v)) for v in views] for n, views in sorted(PRESETS.items())},
        "bases": {str(n): _rounded_bases(views) for n, views in sorted(PRESETS.items())},
    }


def render_settings_hash() -> str:
    """16 hex digits of sha256 over `render_settings()`: equal hashes, equal depth maps."""
    text = json.dumps(render_settings(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
