"""Which reader a file extension goes to, and the one place where reader failures become InputFileError."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputFileError, Opt, OptionError
from ._bin import _read_bin
from ._common import DEFAULT_BIN_COLUMNS, DEFAULT_MAX_POINTS, Geometry, _ParseError, _short, _Source
from ._e57 import _read_e57
from ._gltf import _read_gltf
from ._las import _read_las
from ._numpy import _read_npy, _read_npz
from ._obj import _read_obj
from ._off import _read_off
from ._pcd import _read_pcd
from ._ply import _read_ply
from ._stl import _read_stl
from ._text import _read_text_points

POINT_EXTENSIONS: tuple[str, ...] = (
    ".ply", ".pcd", ".xyz", ".txt", ".pts", ".npy", ".npz", ".las", ".laz", ".bin", ".e57",
)  # fmt: skip
MESH_EXTENSIONS: tuple[str, ...] = (".off", ".obj", ".stl", ".glb", ".gltf")
SUPPORTED_EXTENSIONS: tuple[str, ...] = POINT_EXTENSIONS + MESH_EXTENSIONS
MAX_BIN_COLUMNS = 64

_READERS = {
    ".ply": _read_ply,
    ".pcd": _read_pcd,
    ".xyz": _read_text_points,
    ".txt": _read_text_points,
    ".pts": _read_text_points,
    ".npy": _read_npy,
    ".npz": _read_npz,
    ".las": _read_las,
    ".laz": _read_las,
    ".bin": _read_bin,
    ".e57": _read_e57,
    ".off": _read_off,
    ".obj": _read_obj,
    ".stl": _read_stl,
    ".glb": _read_gltf,
    ".gltf": _read_gltf,
}


def check_read_limits(max_points: int, bin_columns: int) -> None:
    """Raise OptionError for limits no file can be read with."""
    if isinstance(max_points, bool) or not isinstance(max_points, (int, np.integer)) or max_points < 1:
        raise OptionError(Opt("max_points"), f" must be a whole number of at least 1, got {max_points!r}")
    if isinstance(bin_columns, bool) or not isinstance(bin_columns, (int, np.integer)) or not 3 <= bin_columns <= MAX_BIN_COLUMNS:
        raise OptionError(Opt("bin_columns"), f" must be between 3 and {MAX_BIN_COLUMNS}, got {bin_columns!r}")


def _load(
    path: str | Path, *, max_points: int = DEFAULT_MAX_POINTS, bin_columns: int = DEFAULT_BIN_COLUMNS
) -> Geometry:
    check_read_limits(max_points, bin_columns)
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in _READERS:
        shown = f"'{_short(ext, 20)}'" if ext else "(none)"
        raise InputFileError(
            path, f"unknown extension {shown} (supported: {', '.join(SUPPORTED_EXTENSIONS)})"
        )
    try:
        if path.is_dir():
            raise InputFileError(path, "is a folder, not a file")
        size = path.stat().st_size
        if size == 0:
            raise InputFileError(path, "file is empty")
        geo = _READERS[ext](_Source(path, size, int(max_points), int(bin_columns)))
    except InputFileError:
        raise
    except FileNotFoundError:
        raise InputFileError(path, "no such file") from None
    except PermissionError:
        raise InputFileError(path, "permission denied") from None
    except IsADirectoryError:
        raise InputFileError(path, "is a folder, not a file") from None
    except MemoryError:
        raise InputFileError(path, "not enough memory to read it") from None
    except OSError as e:
        raise InputFileError(path, f"cannot read: {_short(e.strerror or e)}") from None
    except _ParseError as e:
        raise InputFileError(path, str(e)) from None
    except (ValueError, IndexError, UnicodeDecodeError, OverflowError) as e:
        raise InputFileError(path, f"cannot parse {ext[1:].upper()} file: {_short(e)}") from None
    verts = np.asarray(geo.vertices).reshape(-1, 3)
    if verts.dtype not in (np.float32, np.float64):
        verts = verts.astype(np.float64)
    faces = geo.faces
    if faces is not None:
        faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
        if len(faces) and (faces.min() < 0 or faces.max() >= len(verts)):
            raise InputFileError(
                path, f"face refers to a vertex that does not exist (mesh has {len(verts)} vertices)"
            )
    return Geometry(verts, faces)
