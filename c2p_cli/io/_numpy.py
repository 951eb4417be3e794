"""NumPy arrays (.npy) and archives (.npz), never unpickled."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ._common import Geometry, _ParseError, _short, _take_xyz


def _read_npy(path: Path) -> Geometry:
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, zipfile.BadZipFile) as e:
        raise _ParseError(f"not a readable .npy array ({_short(e)})") from None
    if not isinstance(arr, np.ndarray):  # np.load opens .npz archives whatever the extension
        arr.close()
        raise _ParseError("is an .npz archive, not an .npy array (rename it to .npz)")
    return Geometry(_take_xyz(arr, ".npy array"))


def _read_npz(path: Path) -> Geometry:
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise _ParseError("is an .npy array, not an .npz archive (rename it to .npy)")
        with z:
            keys = list(z.files)
            if not keys:
                raise _ParseError(".npz holds no arrays")
            key = next((k for k in ("points", "xyz") if k in keys), None)
            if key is None:
                if len(keys) > 1:
                    raise _ParseError(
                        f".npz has several arrays and none is named points or xyz: {', '.join(keys)}"
                    )
                key = keys[0]
            arr = z[key]
    except _ParseError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise _ParseError(f"not a readable .npz archive ({_short(e)})") from None
    return Geometry(_take_xyz(arr, f".npz array '{key}'"))
