"""PCD (Point Cloud Library): ascii, binary and binary_compressed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._common import _BOM, Geometry, _ParseError
from ._open3d import _import_open3d, _quiet_open3d

_PCD_TYPES = {("F", 4): "f4", ("F", 8): "f8", ("I", 1): "i1", ("I", 2): "i2", ("I", 4): "i4", ("I", 8): "i8",
              ("U", 1): "u1", ("U", 2): "u2", ("U", 4): "u4", ("U", 8): "u8"}  # fmt: skip


def _read_pcd(path: Path) -> Geometry:
    data = path.read_bytes().removeprefix(_BOM)
    header: dict[str, list[str]] = {}
    pos = 0
    while True:
        end = data.find(b"\n", pos)
        if end < 0:
            raise _ParseError("PCD header has no DATA line")
        line = data[pos:end].decode("ascii", errors="replace").strip()
        pos = end + 1
        if not line or line.startswith("#"):
            continue
        tok = line.split()
        header[tok[0].upper()] = tok[1:]
        if tok[0].upper() == "DATA":
            break
    if "FIELDS" not in header:
        raise _ParseError("not a PCD file (no FIELDS line)")
    fields = header["FIELDS"]
    n_fields = len(fields)
    sizes = [int(s) for s in header.get("SIZE", ["4"] * n_fields)]
    types = [t.upper() for t in header.get("TYPE", ["F"] * n_fields)]
    counts = [int(c) for c in header.get("COUNT", ["1"] * n_fields)]
    if not (len(sizes) == len(types) == len(counts) == n_fields):
        raise _ParseError("PCD header: FIELDS, SIZE, TYPE and COUNT have different lengths")
    if not {"x", "y", "z"} <= set(fields):
        raise _ParseError("PCD has no x/y/z fields")
    if "POINTS" in header:
        n = int(header["POINTS"][0])
    else:
        n = int(header.get("WIDTH", ["0"])[0]) * int(header.get("HEIGHT", ["1"])[0])
    kind = header["DATA"][0].lower() if header["DATA"] else ""
    if n == 0:
        raise _ParseError("no points")
    xyz_idx = [fields.index(a) for a in ("x", "y", "z")]
    if kind == "ascii":
        lines = [ln for ln in data[pos:].decode("ascii", errors="replace").splitlines() if ln.strip()]
        if len(lines) < n:
            raise _ParseError(f"truncated ASCII PCD: header says {n} points, file holds {len(lines)}")
        ncol = sum(counts)
        rows = [ln.split() for ln in lines[:n]]
        bad = next((i for i, r in enumerate(rows) if len(r) != ncol), None)
        if bad is not None:
            raise _ParseError(f"ASCII PCD point {bad} has {len(rows[bad])} values, header declares {ncol}")
        starts = np.cumsum([0, *counts])
        cols = [int(starts[i]) for i in xyz_idx]
        arr = np.asarray([[r[c] for c in cols] for r in rows], dtype=np.float64)
        return Geometry(arr)
    if kind == "binary":
        try:
            dt = np.dtype(
                [
                    (f"f{i}", "<" + _PCD_TYPES[(t, s)], (c,) if c > 1 else ())
                    for i, (t, s, c) in enumerate(zip(types, sizes, counts, strict=True))
                ]
            )
        except KeyError:
            raise _ParseError(
                f"PCD has an unsupported TYPE/SIZE pair: {list(zip(types, sizes, strict=True))}"
            ) from None
        if pos + dt.itemsize * n > len(data):
            held = (len(data) - pos) // dt.itemsize
            raise _ParseError(f"truncated binary PCD: header says {n} points, file holds {held}")
        arr = np.frombuffer(data, dtype=dt, count=n, offset=pos)
        return Geometry(np.stack([arr[f"f{i}"].astype(np.float64).reshape(n) for i in xyz_idx], axis=1))
    if kind == "binary_compressed":
        return Geometry(_open3d_points(path))
    raise _ParseError(f"unknown PCD DATA kind {kind!r} (ascii, binary, binary_compressed)")


def _open3d_points(path: Path) -> np.ndarray:
    """binary_compressed PCD (LZF) is left to open3d; an empty result is treated as an error."""
    o3d = _import_open3d("binary_compressed PCD files")
    with _quiet_open3d(o3d):
        pcd = o3d.io.read_point_cloud(str(path), format="pcd")
    pts = np.asarray(pcd.points, dtype=np.float64)
    if len(pts) == 0:
        raise _ParseError("open3d could not read this binary_compressed PCD file (or it holds no points)")
    return pts
