"""Which reader a file extension goes to, and the one place where reader failures become InputFileError."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputFileError
from ._common import Geometry, _ParseError, _short
from ._gltf import _read_gltf
from ._numpy import _read_npy, _read_npz
from ._obj import _read_obj
from ._off import _read_off
from ._pcd import _read_pcd
from ._ply import _read_ply
from ._stl import _read_stl
from ._text import _read_text_points

POINT_EXTENSIONS: tuple[str, ...] = (".ply", ".pcd", ".xyz", ".txt", ".pts", ".npy", ".npz")
MESH_EXTENSIONS: tuple[str, ...] = (".off", ".obj", ".stl", ".glb", ".gltf")
SUPPORTED_EXTENSIONS: tuple[str, ...] = POINT_EXTENSIONS + MESH_EXTENSIONS

_READERS = {
    ".ply": _read_ply,
    ".pcd": _read_pcd,
    ".xyz": _read_text_points,
    ".txt": _read_text_points,
    ".pts": _read_text_points,
    ".npy": _read_npy,
    ".npz": _read_npz,
    ".off": _read_off,
    ".obj": _read_obj,
    ".stl": _read_stl,
    ".glb": _read_gltf,
    ".gltf": _read_gltf,
}


def _load(path: str | Path) -> Geometry:
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in _READERS:
        shown = f"'{ext}'" if ext else "(none)"
        raise InputFileError(
            path, f"unknown extension {shown} (supported: {', '.join(SUPPORTED_EXTENSIONS)})"
        )
    try:
        if path.is_dir():
            raise InputFileError(path, "is a folder, not a file")
        size = path.stat().st_size
        if size == 0:
            raise InputFileError(path, "file is empty")
        geo = _READERS[ext](path)
    except InputFileError:
        raise
    except FileNotFoundError:
        raise InputFileError(path, "no such file") from None
    except PermissionError:
        raise InputFileError(path, "permission denied") from None
    except IsADirectoryError:
        raise InputFileError(path, "is a folder, not a file") from None
    except OSError as e:
        raise InputFileError(path, f"cannot read: {e.strerror or e}") from None
    except _ParseError as e:
        raise InputFileError(path, str(e)) from None
    except (ValueError, IndexError, UnicodeDecodeError) as e:
        raise InputFileError(path, f"cannot parse {ext[1:].upper()} file: {_short(e)}") from None
    verts = np.asarray(geo.vertices, dtype=np.float64).reshape(-1, 3)
    faces = geo.faces
    if faces is not None:
        faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
        if len(faces) and (faces.min() < 0 or faces.max() >= len(verts)):
            raise InputFileError(
                path, f"face refers to a vertex that does not exist (mesh has {len(verts)} vertices)"
            )
    return Geometry(verts, faces)
