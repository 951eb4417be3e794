"""The public reading functions: what a file holds, and the cloud a classifier should see."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputFileError
from ..views import apply_up_axis
from ._common import DEFAULT_BIN_COLUMNS, DEFAULT_MAX_POINTS, _triangle_areas
from ._formats import _load
from ._normalize import normalize_unit_sphere
from ._sampling import _check_sampling, _sample_surface, subsample

# Surface samples drawn from a mesh before farthest point sampling picks n of them.
FPS_MESH_SAMPLES_MIN = 8192
FPS_MESH_SAMPLES_FACTOR = 4


class Cloud(np.ndarray):
    """A float32 [n, 3] cloud prepared the way classifiers see it (sampled, normalised into the unit
    sphere, turned so that its up axis `up` is +y): what `read_cloud` and `prepare_cloud` return.

    `clip2point.classify_points` takes it as it is, where a plain array is prepared first: a cloud is
    never turned twice. Slices keep the mark; arithmetic gives plain arrays (prepared again), and
    `np.asarray(cloud)` drops the mark on purpose.
    """

    up: str | None

    def __array_finalize__(self, obj) -> None:
        self.up = getattr(obj, "up", None)

    def __array_wrap__(self, array, context=None, return_scalar=False):
        out = np.asarray(array).view(np.ndarray)
        return out[()] if return_scalar else out

    def __reduce__(self):
        rebuild, args, state = super().__reduce__()
        return rebuild, args, (state, self.up)

    def __setstate__(self, state) -> None:
        base, self.up = state
        super().__setstate__(base)


def prepare_cloud(
    points: np.ndarray, n_points: int = 1024, sampling: str = "random", seed: int | np.random.Generator = 0, up: str = "z",
    *, name: str | Path = "points",
) -> Cloud:
    """An [N, 3+] array of points prepared as `read_cloud` prepares a file's: rows with NaN / Inf
    dropped, `n_points` kept (`sampling`, seeded), centred and scaled into the unit sphere, turned
    so that `up` becomes +y. Raises `InputFileError(name, problem)` for a cloud that cannot be used
    (no finite point, all points coinciding)."""
    _check_sampling(n_points, sampling)
    rng = np.random.default_rng(seed)
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] < 3:
        raise InputFileError(name, f"has shape {points.shape}: need N x 3 (or more columns)")
    points = points[:, :3]
    finite = _finite_rows(points)
    points = points if finite is None else points[finite]
    return _prepared(points, n_points, sampling, rng, up, name)


def _prepared(points: np.ndarray, n_points: int, sampling: str, rng: np.random.Generator, up: str, name) -> Cloud:
    if len(points) == 0:
        raise InputFileError(name, "no finite points")
    if not np.any(np.ptp(points, axis=0) > 0):
        raise InputFileError(name, "all points coincide (zero extent)")
    points = subsample(points, n_points, sampling, rng)
    # Normalise in float64 first: georeferenced scans (UTM northings of 5e6 m) lose their shape
    # in float32 before centring. Rotation commutes with centring and scaling.
    points = apply_up_axis(normalize_unit_sphere(points), up)
    if not np.isfinite(points).all():
        raise InputFileError(name, "coordinates too large to normalise")
    cloud = np.ascontiguousarray(points, dtype=np.float32).view(Cloud)
    cloud.up = up
    return cloud


def read_cloud(
    path: str | Path,
    n_points: int = 1024,
    sampling: str = "random",
    seed: int = 0,
    up: str = "z",
    *,
    max_points: int = DEFAULT_MAX_POINTS,
    bin_columns: int = DEFAULT_BIN_COLUMNS,
) -> Cloud:
    """Read a point-cloud or mesh file into a normalised float32 [n, 3] cloud, ready to render.

    Meshes are sampled area-weighted on their surface (exactly `n_points` samples for `random`,
    `max(4 n, 8192)` for `fps`, which then picks `n_points` of them). A cloud with fewer than
    `n_points` points is returned whole (a shorter array). The cloud is then turned so that
    `up` becomes +y and scaled into the unit sphere. Deterministic for (file, n_points,
    sampling, seed). Raises `InputFileError` naming the file and the problem. The result is a
    `Cloud` (an ndarray that remembers it is prepared).

    `max_points` (default 50,000,000) bounds what a file may declare (points, vertices,
    triangles, uncompressed bytes / 64); `bin_columns` is the float32 column count of `.bin`
    scans (KITTI 4, nuScenes 5).
    """
    _check_sampling(n_points, sampling)
    rng = np.random.default_rng(seed)
    mesh_samples = (
        n_points if sampling == "random" else max(FPS_MESH_SAMPLES_FACTOR * n_points, FPS_MESH_SAMPLES_MIN)
    )
    return _prepared(_raw(path, mesh_samples, rng, max_points, bin_columns), n_points, sampling, rng, up, path)


def read_points(
    path: str | Path, *, max_points: int = DEFAULT_MAX_POINTS, bin_columns: int = DEFAULT_BIN_COLUMNS
) -> np.ndarray:
    """The coordinates stored in a file as float32 [N, 3], unfiltered (for a mesh: its vertices)."""
    return _load(path, max_points=max_points, bin_columns=bin_columns).vertices.astype(np.float32, copy=False)


def read_mesh(path: str | Path, *, max_points: int = DEFAULT_MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Vertices float32 [V, 3] and triangles int64 [F, 3] of a mesh file (or a PLY with faces).

    Polygons are triangulated as fans. A file without faces raises `InputFileError`.
    """
    geo = _load(path, max_points=max_points)
    if geo.faces is None or len(geo.faces) == 0:
        raise InputFileError(path, "holds no faces (not a mesh)")
    return geo.vertices.astype(np.float32, copy=False), geo.faces


def load_raw(
    path: str | Path,
    mesh_samples: int,
    rng: np.random.Generator | int | None = None,
    *,
    max_points: int = DEFAULT_MAX_POINTS,
    bin_columns: int = DEFAULT_BIN_COLUMNS,
) -> np.ndarray:
    """The point set of a file before subsampling, float64 [N, 3], with NaN / Inf rows dropped.

    A mesh whose finite triangles have non-zero total area gives `mesh_samples` area-weighted
    surface samples; a mesh without faces or with zero area gives its vertices; a point file
    gives its points.
    """
    return _raw(path, mesh_samples, np.random.default_rng(rng), max_points, bin_columns).astype(np.float64, copy=False)


def _raw(path, mesh_samples: int, rng: np.random.Generator, max_points: int, bin_columns: int) -> np.ndarray:
    """`load_raw` in the precision the file stores (float32 stays float32: half the memory, and
    every later step converts exactly to float64 where it computes)."""
    geo = _load(path, max_points=max_points, bin_columns=bin_columns)
    verts = geo.vertices
    if len(verts) == 0:
        raise InputFileError(path, "no points")
    finite = _finite_rows(verts)
    if finite is not None and not finite.any():
        raise InputFileError(path, "all coordinates are NaN or Inf")
    if geo.faces is not None and len(geo.faces):
        faces = geo.faces if finite is None else geo.faces[finite[geo.faces].all(axis=1)]
        if len(faces):
            areas = _triangle_areas(verts, faces)
            if areas.sum() > 0:
                return _sample_surface(verts, faces, areas, mesh_samples, rng, np.float64)
    return verts if finite is None else verts[finite]


def _finite_rows(verts: np.ndarray, chunk: int = 1 << 20) -> np.ndarray | None:
    """None when every coordinate is finite (checked a chunk at a time, without an [N, 3] mask),
    else the per-row mask."""
    if all(np.isfinite(verts[s : s + chunk]).all() for s in range(0, len(verts), chunk)):
        return None
    return np.isfinite(verts).all(axis=1)
