"""Any point-cloud or mesh file -> float32 [N, 3]: parsing, surface sampling, subsampling, normalisation.

Only numpy and the standard library are imported at module level: the torch-free ONNX Runtime
path uses this package. Every format has its own numpy parser here (open3d is not used: it
returned silently empty clouds on errors, could not read ModelNet's broken OFF headers, and its
PCD reader read past its buffer on lying headers). LAS/LAZ use laspy (extra `las`), E57 pye57
(extra `e57`), imported when such a file is read.

Untrusted input: every reader reads the header first, checks each declared count against the
file's size and against `max_points` (default 50,000,000) before allocating, and reads the body
a chunk at a time; memory beyond the result stays a few MB. See `_common`.

Reading is split in three layers:

- `read_points(path)`: the coordinates stored in the file, as they are (for a mesh: its vertices).
- `read_mesh(path)`: vertices and triangles of a mesh file (.off/.obj/.stl/.glb/.gltf, or a PLY
  with faces); polygons are triangulated as fans.
- `load_raw(path, mesh_samples, rng)`: the point set a classifier should see, before subsampling:
  meshes (including PLY files with faces of non-zero area) are sampled area-weighted on their
  surface; point files give their points; rows with NaN / Inf are dropped.

`read_cloud` = `load_raw` + `prepare_cloud` (`subsample` + `normalize_unit_sphere` +
`views.apply_up_axis`), whose result is a `Cloud`: an array that remembers it is prepared.
`write_ply` and `write_off` write the two formats `c2p synth` produces.

One private module per format family (`_ply`, `_pcd` + `_lzf`, `_text`, `_numpy`, `_off`, `_obj`,
`_stl`, `_gltf`, `_las`, `_bin`, `_e57`; `_textscan` parses text bodies with numpy);
`_formats` maps extensions to them and turns their failures into `InputFileError`. `_fps` is
the exact, fast farthest point sampling.
"""

from __future__ import annotations

from ._common import DEFAULT_BIN_COLUMNS, DEFAULT_MAX_POINTS, Geometry, _fan, _triangle_areas
from ._formats import MESH_EXTENSIONS, POINT_EXTENSIONS, SUPPORTED_EXTENSIONS, check_read_limits
from ._normalize import normalize_unit_sphere, unit_sphere_transform
from ._read import (
    FPS_MESH_SAMPLES_FACTOR,
    FPS_MESH_SAMPLES_MIN,
    Cloud,
    load_raw,
    prepare_cloud,
    read_cloud,
    read_mesh,
    read_points,
)
from ._sampling import FPS_BACKENDS, SAMPLING_METHODS, farthest_point_sample, sample_surface, subsample
from ._writers import write_off, write_ply

__all__ = [
    "Cloud",
    "DEFAULT_BIN_COLUMNS",
    "DEFAULT_MAX_POINTS",
    "FPS_BACKENDS",
    "FPS_MESH_SAMPLES_FACTOR",
    "FPS_MESH_SAMPLES_MIN",
    "MESH_EXTENSIONS",
    "POINT_EXTENSIONS",
    "SAMPLING_METHODS",
    "SUPPORTED_EXTENSIONS",
    "Geometry",
    "check_read_limits",
    "farthest_point_sample",
    "load_raw",
    "normalize_unit_sphere",
    "prepare_cloud",
    "read_cloud",
    "read_mesh",
    "read_points",
    "sample_surface",
    "subsample",
    "unit_sphere_transform",
    "write_off",
    "write_ply",
]
# Private helpers the tests use directly.
_ = (_fan, _triangle_areas)
