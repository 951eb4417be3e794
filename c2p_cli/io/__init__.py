"""Any point-cloud or mesh file -> float32 [N, 3]: parsing, surface sampling, subsampling, normalisation.

Only numpy and the standard library are imported at module level: the torch-free ONNX Runtime
path uses this package. open3d is imported lazily, and only for glTF / GLB meshes and
binary_compressed PCD files; every other format has its own numpy parser here, because open3d
returns silently empty clouds on errors and cannot read ModelNet's broken OFF headers.

Reading is split in three layers:

- `read_points(path)`: the coordinates stored in the file, as they are (for a mesh: its vertices).
- `read_mesh(path)`: vertices and triangles of a mesh file (.off/.obj/.stl/.glb/.gltf, or a PLY
  with faces); polygons are triangulated as fans.
- `load_raw(path, mesh_samples, rng)`: the point set a classifier should see, before subsampling:
  meshes (including PLY files with faces of non-zero area) are sampled area-weighted on their
  surface; point files give their points; rows with NaN / Inf are dropped.

`read_cloud` = `load_raw` + `subsample` + `views.apply_up_axis` + `normalize_unit_sphere`.
`write_ply` and `write_off` write the two formats `c2p synth` produces.

One private module per format family (`_ply`, `_pcd`, `_text`, `_numpy`, `_off`, `_obj`, `_stl`,
`_gltf`); `_formats` maps extensions to them and turns their failures into `InputFileError`.
"""

from __future__ import annotations

from ._common import Geometry, _fan, _triangle_areas
from ._formats import MESH_EXTENSIONS, POINT_EXTENSIONS, SUPPORTED_EXTENSIONS
from ._inputs import list_inputs
from ._normalize import normalize_unit_sphere, unit_sphere_transform
from ._read import FPS_MESH_SAMPLES_FACTOR, FPS_MESH_SAMPLES_MIN, load_raw, read_cloud, read_mesh, read_points
from ._sampling import SAMPLING_METHODS, farthest_point_sample, sample_surface, subsample
from ._writers import write_off, write_ply

__all__ = [
    "FPS_MESH_SAMPLES_FACTOR",
    "FPS_MESH_SAMPLES_MIN",
    "MESH_EXTENSIONS",
    "POINT_EXTENSIONS",
    "SAMPLING_METHODS",
    "SUPPORTED_EXTENSIONS",
    "Geometry",
    "farthest_point_sample",
    "list_inputs",
    "load_raw",
    "normalize_unit_sphere",
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
