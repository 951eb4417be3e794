"""Shaded RGB renders of triangle meshes for image-depth pairs: headless, on CPU, deterministic.

The camera is the depth renderer's (`clip2point.views.camera_bases`): orthographic, rows right, up,
forward; pixel (i, j) of an S x S image looks along `forward` through the NDC point
`x_j = -1 + (2j + 1) / S`, `y_i = 1 - (2i + 1) / S`. So a mesh normalised like its point cloud
(`normalise_with_points`) gives an RGB image aligned pixel for pixel with the cloud's depth map.

Why ray casting: open3d's `RaycastingScene` (Embree) needs no display, no OpenGL context and no
GPU, is exact for orthographic cameras (one ray per pixel, origin on the image plane, direction
`forward`) and returns the hit distance and the face normal, which is all Phong shading needs.
It runs on CPU only; rendering is a one-off preprocessing step (`c2p make-pairs`), about 5 ms
per 224 px view.

Shading: Phong with ambient + diffuse + specular terms, two-sided (normals are flipped to face
the camera, because mesh files often have inconsistent winding), one directional white light
whose direction is drawn per image from a seeded generator (always from the camera's side, so
that the visible surface is lit). Background pixels are exactly white (1, 1, 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clip2point import defaults

NEUTRAL_GREY = (0.7, 0.7, 0.7)


@dataclass(frozen=True)
class Phong:
    """Phong material constants (colour = base * (ambient + diffuse * n.l) + specular * (r.v)^shininess)."""

    ambient: float = 0.35
    diffuse: float = 0.6
    specular: float = 0.25
    shininess: float = 24.0


def normalise_with_points(
    vertices: np.ndarray, points: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Centre and scale a mesh and its surface samples by the samples' statistics, like `io.normalize_unit_sphere`.

    Both arrays must already be in the renderer's frame (up axis applied). Returns float32
    (vertices, points); the points end up in the unit sphere, the mesh in (almost) the same one.
    """
    from clip2point.io import unit_sphere_transform

    centre, scale = unit_sphere_transform(points)
    v = (np.asarray(vertices, dtype=np.float64) - centre) / scale
    p = (np.asarray(points, dtype=np.float64) - centre) / scale
    return v.astype(np.float32), p.astype(np.float32)


def random_light(rng: np.random.Generator) -> np.ndarray:
    """A light direction in camera coordinates (right, up, towards-camera), unit length.

    Azimuth uniform, elevation between 15 and 75 degrees above the image plane towards the
    camera, so the visible side is lit at a varying, never grazing, angle.
    """
    azimuth = rng.uniform(0.0, 2.0 * np.pi)
    elevation = np.deg2rad(rng.uniform(15.0, 75.0))
    c = np.cos(elevation)
    return np.array([c * np.cos(azimuth), c * np.sin(azimuth), np.sin(elevation)])


def base_colour(rng: np.random.Generator | None) -> np.ndarray:
    """Neutral grey without a generator; else a seeded, moderately saturated colour."""
    if rng is None:
        return np.array(NEUTRAL_GREY)
    import colorsys

    h, s, v = rng.uniform(0.0, 1.0), rng.uniform(0.25, 0.6), rng.uniform(0.6, 0.9)
    return np.array(colorsys.hsv_to_rgb(h, s, v))


def require_open3d():
    """open3d, or a one-line error naming the extra that installs it."""
    try:
        import open3d
    except ImportError:
        from clip2point.errors import BackendUnavailableError

        raise BackendUnavailableError(
            "rendering RGB views of meshes (image-depth pairs for pre-training) needs open3d: pip install 'clip2point[mesh]'"
        ) from None
    return open3d


class MeshRenderer:
    """Renders one mesh from several views: `render(bases, lights) -> uint8 [V, S, S, 3]`.

    `vertices` float [V, 3] (normalised, renderer frame), `faces` int [F, 3]. `colour` is the
    RGB base colour in [0, 1] (default neutral grey).
    """

    def __init__(
        self,
        vertices: np.ndarray,
        faces: np.ndarray,
        *,
        image_size: int = defaults.IMAGE_SIZE,
        colour: np.ndarray | tuple[float, float, float] = NEUTRAL_GREY,
        material: Phong = Phong(),
    ):
        o3d = require_open3d()
        verts = np.ascontiguousarray(vertices, dtype=np.float32)
        tris = np.ascontiguousarray(faces, dtype=np.uint32)
        if verts.ndim != 2 or verts.shape[1] != 3 or tris.ndim != 2 or tris.shape[1] != 3 or len(tris) == 0:
            raise ValueError(f"need vertices [V, 3] and faces [F, 3], got {verts.shape} and {tris.shape}")
        self._scene = o3d.t.geometry.RaycastingScene()
        self._scene.add_triangles(o3d.core.Tensor(verts), o3d.core.Tensor(tris))
        self._o3d = o3d
        self.image_size = int(image_size)
        self.colour = np.asarray(colour, dtype=np.float64)
        self.material = material
        s = self.image_size
        centres = (2.0 * np.arange(s) + 1.0) / s
        # NDC of each pixel: x to the right, y up, row-major (row i, column j).
        self._x = np.tile(-1.0 + centres, s)
        self._y = np.repeat(1.0 - centres, s)

    def render_view(self, basis: np.ndarray, light: np.ndarray) -> np.ndarray:
        """uint8 [S, S, 3] for one camera basis (rows right, up, forward) and a light in camera coordinates."""
        basis = np.asarray(basis, dtype=np.float64)
        right, up, forward = basis
        # Start every ray behind the unit sphere (orthographic: any start before the mesh is fine).
        origins = self._x[:, None] * right + self._y[:, None] * up - 2.0 * forward
        rays = np.concatenate([origins, np.broadcast_to(forward, origins.shape)], axis=1).astype(np.float32)
        hits = self._scene.cast_rays(self._o3d.core.Tensor(rays))
        t = hits["t_hit"].numpy()
        hit = np.isfinite(t)
        image = np.ones((self.image_size * self.image_size, 3))
        if hit.any():
            normals = hits["primitive_normals"].numpy()[hit].astype(np.float64)
            normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
            # Two-sided: the normal that faces the camera (against the view direction).
            normals *= np.where(normals @ forward > 0, -1.0, 1.0)[:, None]
            to_light = np.asarray(light, dtype=np.float64) @ np.stack([right, up, -forward])
            to_light /= np.linalg.norm(to_light)
            to_eye = -forward
            n_dot_l = normals @ to_light
            diffuse = np.clip(n_dot_l, 0.0, None)
            reflect = 2.0 * n_dot_l[:, None] * normals - to_light
            spec = np.clip(reflect @ to_eye, 0.0, None) ** self.material.shininess * (n_dot_l > 0)
            m = self.material
            rgb = self.colour[None] * (m.ambient + m.diffuse * diffuse[:, None]) + m.specular * spec[:, None]
            image[hit] = np.clip(rgb, 0.0, 1.0)
        return np.round(image * 255.0).astype(np.uint8).reshape(self.image_size, self.image_size, 3)

    def render(self, bases: np.ndarray, lights: np.ndarray) -> np.ndarray:
        """uint8 [V, S, S, 3] for V camera bases and V light directions (camera coordinates)."""
        return np.stack([self.render_view(b, light) for b, light in zip(bases, lights, strict=True)])
