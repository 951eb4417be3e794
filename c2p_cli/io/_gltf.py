"""glTF / GLB meshes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._common import Geometry, _ParseError
from ._open3d import _import_open3d, _quiet_open3d


def _read_gltf(path: Path) -> Geometry:
    o3d = _import_open3d("glTF / GLB meshes")
    # open3d returns an empty mesh on failure (we check for that) and warns on stdout (silenced).
    with _quiet_open3d(o3d):
        mesh = o3d.io.read_triangle_mesh(os.fspath(path))
    verts = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.triangles, dtype=np.int64)
    if len(verts) == 0:
        raise _ParseError("open3d could not read this glTF/GLB file (or it holds no mesh)")
    return Geometry(verts, faces if len(faces) else None)
