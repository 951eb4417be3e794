"""Any point-cloud or mesh file -> float32 [N, 3]: parsing, surface sampling, subsampling, normalisation.

Only numpy and the standard library are imported at module level: the torch-free ONNX Runtime
path uses this module. open3d is imported lazily, and only for glTF / GLB meshes and
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

Binary PCD files saved with PCL's LZF compression (binary_compressed) are read through open3d.
"""

from __future__ import annotations

import io as _stdio
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputFileError, UsageError
from .views import apply_up_axis

POINT_EXTENSIONS: tuple[str, ...] = (".ply", ".pcd", ".xyz", ".txt", ".pts", ".npy", ".npz")
MESH_EXTENSIONS: tuple[str, ...] = (".off", ".obj", ".stl", ".glb", ".gltf")
SUPPORTED_EXTENSIONS: tuple[str, ...] = POINT_EXTENSIONS + MESH_EXTENSIONS
SAMPLING_METHODS: tuple[str, ...] = ("random", "fps")

# Surface samples drawn from a mesh before farthest point sampling picks n of them.
FPS_MESH_SAMPLES_MIN = 8192
FPS_MESH_SAMPLES_FACTOR = 4


@dataclass
class Geometry:
    """What a file holds: vertices (float64 [V, 3]) and, for meshes, triangles (int64 [F, 3])."""

    vertices: np.ndarray
    faces: np.ndarray | None = None


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def read_cloud(
    path: str | Path,
    n_points: int = 1024,
    sampling: str = "random",
    seed: int = 0,
    up: str = "z",
) -> np.ndarray:
    """Read a point-cloud or mesh file into a normalised float32 [n, 3] cloud, ready to render.

    Meshes are sampled area-weighted on their surface (exactly `n_points` samples for `random`,
    `max(4 n, 8192)` for `fps`, which then picks `n_points` of them). A cloud with fewer than
    `n_points` points is returned whole (a shorter array). The cloud is then turned so that
    `up` becomes +y and scaled into the unit sphere. Deterministic for (file, n_points,
    sampling, seed). Raises `InputFileError` naming the file and the problem.
    """
    _check_sampling(n_points, sampling)
    rng = np.random.default_rng(seed)
    mesh_samples = (
        n_points if sampling == "random" else max(FPS_MESH_SAMPLES_FACTOR * n_points, FPS_MESH_SAMPLES_MIN)
    )
    points = load_raw(path, mesh_samples, rng)
    if not np.any(np.ptp(points, axis=0) > 0):
        raise InputFileError(path, "all points coincide (zero extent)")
    points = subsample(points, n_points, sampling, rng)
    # Normalise in float64 first: georeferenced scans (UTM northings of 5e6 m) lose their shape
    # in float32 before centring. Rotation commutes with centring and scaling.
    points = apply_up_axis(normalize_unit_sphere(points), up)
    if not np.isfinite(points).all():
        raise InputFileError(path, "coordinates too large to normalise")
    return points


def read_points(path: str | Path) -> np.ndarray:
    """The coordinates stored in a file as float32 [N, 3], unfiltered (for a mesh: its vertices)."""
    return _load(path).vertices.astype(np.float32)


def read_mesh(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices float32 [V, 3] and triangles int64 [F, 3] of a mesh file (or a PLY with faces).

    Polygons are triangulated as fans. A file without faces raises `InputFileError`.
    """
    geo = _load(path)
    if geo.faces is None or len(geo.faces) == 0:
        raise InputFileError(path, "holds no faces (not a mesh)")
    return geo.vertices.astype(np.float32), geo.faces


def load_raw(path: str | Path, mesh_samples: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """The point set of a file before subsampling, float64 [N, 3], with NaN / Inf rows dropped.

    A mesh whose finite triangles have non-zero total area gives `mesh_samples` area-weighted
    surface samples; a mesh without faces or with zero area gives its vertices; a point file
    gives its points.
    """
    rng = np.random.default_rng(rng)
    geo = _load(path)
    verts = geo.vertices
    if len(verts) == 0:
        raise InputFileError(path, "no points")
    finite = np.isfinite(verts).all(axis=1)
    if not finite.any():
        raise InputFileError(path, "all coordinates are NaN or Inf")
    if geo.faces is not None and len(geo.faces):
        faces = geo.faces[finite[geo.faces].all(axis=1)]
        if len(faces) and _triangle_areas(verts, faces).sum() > 0:
            return sample_surface(verts, faces, mesh_samples, rng, dtype=np.float64)
    return verts[finite]


def sample_surface(
    vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator, dtype=np.float32
) -> np.ndarray:
    """`n` points [n, 3] (`dtype`, float32 by default) drawn uniformly on a triangle mesh's surface
    (area-weighted). File reading asks for float64 so that huge coordinates survive until normalised."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    areas = _triangle_areas(v, f)
    total = areas.sum()
    if not (np.isfinite(total) and total > 0):
        raise ValueError("mesh has zero (or non-finite) surface area")
    idx = rng.choice(len(f), size=n, p=areas / total)
    a, b, c = v[f[idx, 0]], v[f[idx, 1]], v[f[idx, 2]]
    u, w = rng.random((2, n, 1))
    # Reflecting samples of the unit square's upper triangle keeps the density uniform.
    flip = (u + w) > 1.0
    u, w = np.where(flip, 1.0 - u, u), np.where(flip, 1.0 - w, w)
    return (a + u * (b - a) + w * (c - a)).astype(dtype, copy=False)


def farthest_point_sample(
    points: np.ndarray, n: int, rng: np.random.Generator | int | None = 0
) -> np.ndarray:
    """`n` points of `points` picked by farthest point sampling from a seeded random start.

    O(n * N) time with a running minimum-distance array. Returns all points when N <= n.
    """
    pts = np.asarray(points)
    if len(pts) <= n:
        return pts
    rng = np.random.default_rng(rng)
    # Coordinates as three contiguous float32 rows, centred in float64 first so that large
    # offsets (scanner coordinates) keep their precision: 2-3x faster than an [N, 3] float64 pass.
    p = np.asarray(pts, dtype=np.float64)
    cols = np.ascontiguousarray((p - p.mean(axis=0)).T.astype(np.float32))
    chosen = np.empty(n, dtype=np.int64)
    chosen[0] = rng.integers(len(pts))
    min_d = np.full(len(pts), np.inf, dtype=np.float32)
    d = np.empty_like(min_d)
    tmp = np.empty_like(min_d)
    for i in range(1, n):
        c = cols[:, chosen[i - 1]]
        np.subtract(cols[0], c[0], out=tmp)
        np.multiply(tmp, tmp, out=d)
        for axis in (1, 2):
            np.subtract(cols[axis], c[axis], out=tmp)
            tmp *= tmp
            d += tmp
        np.minimum(min_d, d, out=min_d)
        chosen[i] = int(np.argmax(min_d))
    return pts[chosen]


def subsample(
    points: np.ndarray, n: int, method: str = "random", seed: np.random.Generator | int | None = 0
) -> np.ndarray:
    """At most `n` points: `random` (seeded, without replacement) or `fps`; fewer are kept as they are."""
    _check_sampling(n, method)
    if len(points) <= n:
        return points
    rng = np.random.default_rng(seed)
    if method == "fps":
        return farthest_point_sample(points, n, rng)
    return points[rng.choice(len(points), size=n, replace=False)]


def unit_sphere_transform(points: np.ndarray) -> tuple[np.ndarray, float]:
    """(centre [1, 3], scale) such that (points - centre) / scale is centred on the mean and fits
    the unit sphere. Computed on coordinates divided by their largest magnitude, so neither the mean
    nor the squared norms overflow for huge (but finite) values. A cloud of coincident points gets
    the scale 1 (it can only be centred)."""
    p = np.asarray(points, dtype=np.float64)
    if not len(p):
        return np.zeros((1, 3)), 1.0
    magnitude = float(np.abs(p).max())
    magnitude = magnitude if np.isfinite(magnitude) and magnitude > 0 else 1.0
    q = p / magnitude
    centre = q.mean(axis=0, keepdims=True)
    radius = float(np.sqrt(((q - centre) ** 2).sum(axis=1).max()))
    return centre * magnitude, (radius if radius > 0 else 1.0) * magnitude


def normalize_unit_sphere(points: np.ndarray) -> np.ndarray:
    """Centre on the mean and divide by the largest norm, so that the cloud fits the unit sphere.

    A cloud of coincident points is only centred (it cannot be scaled). Returns float32.
    """
    p = np.asarray(points, dtype=np.float64)
    centre, scale = unit_sphere_transform(p)
    return ((p - centre) / scale).astype(np.float32)


def list_inputs(paths: list[Path] | list[str], recursive: bool = False) -> list[Path]:
    """Files to read: files given directly are kept as given (an unknown extension fails later,
    when read, with a clear error); folders are scanned (recursively with `recursive`) for
    supported extensions, in sorted order. A path that does not exist raises `InputFileError`.
    """
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = p.rglob("*") if recursive else p.iterdir()
            out.extend(sorted(f for f in found if f.is_file() and f.suffix.lower() in SUPPORTED_EXTENSIONS))
        elif p.exists():
            out.append(p)
        else:
            raise InputFileError(p, "no such file or folder")
    return out


# ---------------------------------------------------------------------------------------------
# Writers (synthetic datasets, examples, tests)
# ---------------------------------------------------------------------------------------------

_NP_TO_PLY = {"i1": "char", "u1": "uchar", "i2": "short", "u2": "ushort", "i4": "int", "u4": "uint",
              "f4": "float", "f8": "double"}  # fmt: skip


def write_ply(
    path: str | Path,
    points: np.ndarray,
    properties: dict[str, np.ndarray] | None = None,
    faces: np.ndarray | None = None,
    fmt: str = "binary_little_endian",
) -> None:
    """Write a PLY file: float32 x/y/z, optional extra per-vertex `properties` (each [N], any of
    the PLY scalar types), optional triangles; `fmt` is ascii, binary_little_endian or
    binary_big_endian."""
    pts = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    cols: list[tuple[str, np.ndarray]] = [("x", pts[:, 0]), ("y", pts[:, 1]), ("z", pts[:, 2])]
    cols += [(k, np.asarray(v).reshape(-1)) for k, v in (properties or {}).items()]
    lines = ["ply", f"format {fmt} 1.0", "comment written by clip2point", f"element vertex {len(pts)}"]
    lines += [f"property {_NP_TO_PLY[a.dtype.str[1:]]} {k}" for k, a in cols]
    tris = None if faces is None else np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if tris is not None:
        lines += [f"element face {len(tris)}", "property list uchar int vertex_indices"]
    lines.append("end_header")
    header = ("\n".join(lines) + "\n").encode("ascii")
    with open(path, "wb") as fh:
        fh.write(header)
        if fmt == "ascii":
            for i in range(len(pts)):
                fh.write((" ".join(repr(a[i].item()) for _, a in cols) + "\n").encode("ascii"))
            if tris is not None:
                fh.write("".join(f"3 {a} {b} {c}\n" for a, b, c in tris.tolist()).encode("ascii"))
            return
        order = "<" if fmt == "binary_little_endian" else ">"
        dt = np.dtype([(k, order + a.dtype.str[1:]) for k, a in cols])
        rec = np.empty(len(pts), dtype=dt)
        for k, a in cols:
            rec[k] = a
        fh.write(rec.tobytes())
        if tris is not None:
            fdt = np.dtype([("n", "u1"), ("idx", order + "i4", (3,))])
            frec = np.empty(len(tris), dtype=fdt)
            frec["n"] = 3
            frec["idx"] = tris
            fh.write(frec.tobytes())


def write_off(
    path: str | Path, vertices: np.ndarray, faces: np.ndarray, modelnet_header: bool = False
) -> None:
    """Write an OFF mesh; `modelnet_header` writes ModelNet's broken first line "OFF<nv> <nf> 0"."""
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    counts = f"{len(v)} {len(f)} 0"
    head = f"OFF{counts}\n" if modelnet_header else f"OFF\n{counts}\n"
    body = "".join(f"{a:.6g} {b:.6g} {c:.6g}\n" for a, b, c in v.tolist())
    body += "".join(f"3 {a} {b} {c}\n" for a, b, c in f.tolist())
    Path(path).write_text(head + body)


# ---------------------------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------------------------


def _check_sampling(n: int, method: str) -> None:
    if method not in SAMPLING_METHODS:
        raise UsageError(f"sampling must be one of {', '.join(SAMPLING_METHODS)}, got {method!r}")
    if n < 1:
        raise UsageError(f"the number of points must be at least 1, got {n}")


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


class _ParseError(Exception):
    """A format problem; `_load` turns it into InputFileError(path, message)."""


def _short(e: Exception, limit: int = 160) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if b"\x00" in data[:4096]:
        raise _ParseError(f"looks binary, not a text {path.suffix.lower()[1:].upper()} file")
    return data.decode("utf-8-sig", errors="replace")


def _take_xyz(arr: np.ndarray, what: str) -> np.ndarray:
    if arr.dtype.kind not in "fiub":
        raise _ParseError(f"{what} has dtype {arr.dtype} — need numbers")
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2 or arr.shape[1] < 3:
        raise _ParseError(f"{what} has shape {arr.shape} — need N x 3 or more columns")
    if arr.shape[0] == 0:
        raise _ParseError("no points")
    return np.asarray(arr[:, :3], dtype=np.float64)


def _fan(polys: list[list[int]]) -> np.ndarray:
    """Triangulate polygons (vertex index lists) as fans around their first vertex."""
    tris = [(p[0], p[i], p[i + 1]) for p in polys if len(p) >= 3 for i in range(1, len(p) - 1)]
    return np.asarray(tris, dtype=np.int64).reshape(-1, 3)


def _triangle_areas(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Triangle areas up to one common factor (vertices are scaled by their largest magnitude so
    that huge coordinates cannot overflow): fine for area weights and for "is the area zero"."""
    v = np.asarray(v, dtype=np.float64)
    magnitude = np.abs(v).max() if len(v) else 0.0
    if np.isfinite(magnitude) and magnitude > 0:
        v = v / magnitude
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    return 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)


# ---------------------------------------------------------------------------------------------
# PLY
# ---------------------------------------------------------------------------------------------

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip


@dataclass
class _PlyProp:
    name: str
    dtype: str  # numpy type code without byte order
    count_dtype: str | None = None  # set for list properties


@dataclass
class _PlyElement:
    name: str
    count: int
    props: list[_PlyProp]


def _ply_header(data: bytes) -> tuple[str, list[_PlyElement], int]:
    if not data.startswith(b"ply"):
        raise _ParseError("not a PLY file (does not start with 'ply')")
    m = re.search(rb"end_header[ \t]*\r?\n", data)
    if m is None:
        raise _ParseError("PLY header has no end_header line")
    header = data[: m.start()].decode("ascii", errors="replace").splitlines()
    fmt = ""
    elements: list[_PlyElement] = []
    for line in header[1:]:
        tok = line.split()
        if not tok or tok[0] in ("comment", "obj_info"):
            continue
        if tok[0] == "format":
            if len(tok) < 2 or tok[1] not in ("ascii", "binary_little_endian", "binary_big_endian"):
                raise _ParseError(f"unknown PLY format line: {line.strip()!r}")
            fmt = tok[1]
        elif tok[0] == "element":
            if len(tok) != 3 or not tok[2].isdigit():
                raise _ParseError(f"bad PLY element line: {line.strip()!r}")
            elements.append(_PlyElement(tok[1], int(tok[2]), []))
        elif tok[0] == "property":
            if not elements:
                raise _ParseError("PLY property before any element")
            if len(tok) == 5 and tok[1] == "list":
                if tok[2] not in _PLY_TYPES or tok[3] not in _PLY_TYPES:
                    raise _ParseError(f"unknown PLY property type in {line.strip()!r}")
                elements[-1].props.append(_PlyProp(tok[4], _PLY_TYPES[tok[3]], _PLY_TYPES[tok[2]]))
            elif len(tok) == 3:
                if tok[1] not in _PLY_TYPES:
                    raise _ParseError(f"unknown PLY property type {tok[1]!r}")
                elements[-1].props.append(_PlyProp(tok[2], _PLY_TYPES[tok[1]]))
            else:
                raise _ParseError(f"bad PLY property line: {line.strip()!r}")
    if not fmt:
        raise _ParseError("PLY header has no format line")
    return fmt, elements, m.end()


_BOM = b"\xef\xbb\xbf"


def _read_ply(path: Path) -> Geometry:
    data = path.read_bytes().removeprefix(_BOM)  # editors on Windows prepend one
    fmt, elements, body_start = _ply_header(data)
    vertex = next((e for e in elements if e.name == "vertex"), None)
    if vertex is None:
        raise _ParseError("PLY has no vertex element")
    names = [p.name for p in vertex.props]
    if not {"x", "y", "z"} <= set(names):
        raise _ParseError("PLY has no x/y/z properties")
    for p in vertex.props:
        if p.count_dtype is not None:
            raise _ParseError(f"PLY vertex element has a list property '{p.name}' (not supported)")
    if vertex.count == 0:
        raise _ParseError("no points")
    if fmt == "ascii":
        parsed = _ply_ascii(data[body_start:], elements)
    else:
        parsed = _ply_binary(data, body_start, elements, "<" if fmt == "binary_little_endian" else ">")
    vdata = parsed["vertex"]
    verts = np.stack([np.asarray(vdata[n], dtype=np.float64) for n in ("x", "y", "z")], axis=1)
    faces = parsed.get("face")
    return Geometry(verts, faces)


def _face_list_prop(el: _PlyElement) -> int | None:
    for i, p in enumerate(el.props):
        if p.count_dtype is not None and p.name in ("vertex_indices", "vertex_index"):
            return i
    return None


def _ply_ascii(body: bytes, elements: list[_PlyElement]) -> dict:
    lines = [ln for ln in body.decode("ascii", errors="replace").splitlines() if ln.strip()]
    out: dict = {}
    pos = 0
    for el in elements:
        chunk = lines[pos : pos + el.count]
        if len(chunk) < el.count:
            raise _ParseError(
                f"truncated ASCII PLY: header says {el.count} {_plural(el.name)}, file holds {len(chunk)}"
            )
        pos += el.count
        if el.name == "vertex":
            ncol = len(el.props)
            rows = [ln.split() for ln in chunk]
            bad = next((i for i, r in enumerate(rows) if len(r) != ncol), None)
            if bad is not None:
                raise _ParseError(
                    f"ASCII PLY vertex {bad} has {len(rows[bad])} values, header declares {ncol}"
                )
            arr = np.asarray(rows, dtype=np.float64).reshape(el.count, ncol)
            out["vertex"] = {p.name: arr[:, i] for i, p in enumerate(el.props)}
        elif el.name == "face":
            li = _face_list_prop(el)
            if li is None:
                continue
            polys = []
            for ln in chunk:
                tok = ln.split()
                # Skip the scalar properties before the list, then read "count i0 i1 ...".
                k = int(tok[li])
                polys.append([int(t) for t in tok[li + 1 : li + 1 + k]])
            out["face"] = _fan(polys)
        if "vertex" in out and ("face" in out or not any(e.name == "face" for e in elements)):
            break
    return out


def _plural(name: str) -> str:
    return {"vertex": "vertices", "face": "faces"}.get(name, name + "s")


def _ply_binary(data: bytes, offset: int, elements: list[_PlyElement], order: str) -> dict:
    out: dict = {}
    for el in elements:
        if el.name not in ("vertex", "face") and all(
            e.name in out for e in elements if e.name in ("vertex", "face")
        ):
            break
        if all(p.count_dtype is None for p in el.props):
            dt = np.dtype([(f"p{i}", order + p.dtype) for i, p in enumerate(el.props)])
            need = dt.itemsize * el.count
            if offset + need > len(data):
                held = (len(data) - offset) // max(dt.itemsize, 1)
                raise _ParseError(
                    f"truncated binary PLY: header says {el.count} {_plural(el.name)}, file holds {held}"
                )
            arr = np.frombuffer(data, dtype=dt, count=el.count, offset=offset)
            offset += need
            if el.name == "vertex":
                out["vertex"] = {p.name: arr[f"p{i}"] for i, p in enumerate(el.props)}
            continue
        faces, offset = _ply_binary_lists(data, offset, el, order)
        if el.name == "face" and faces is not None:
            out["face"] = faces
        if "vertex" in out and "face" in out:
            break
    return out


def _ply_binary_lists(data: bytes, offset: int, el: _PlyElement, order: str) -> tuple[np.ndarray | None, int]:
    """Read an element with list properties; returns its fan-triangulated faces (if it is a face list)."""
    li = _face_list_prop(el) if el.name == "face" else None
    # Fast path: one list property of uniform length, as almost every exporter writes.
    if len(el.props) == 1 and el.count > 0:
        p = el.props[0]
        cdt = np.dtype(order + p.count_dtype)
        if offset + cdt.itemsize > len(data):
            raise _ParseError(
                f"truncated binary PLY: header says {el.count} {_plural(el.name)}, file holds 0"
            )
        k = int(np.frombuffer(data, dtype=cdt, count=1, offset=offset)[0])
        dt = np.dtype([("n", cdt), ("idx", order + p.dtype, (k,))])
        if offset + dt.itemsize * el.count <= len(data):
            arr = np.frombuffer(data, dtype=dt, count=el.count, offset=offset)
            if np.all(arr["n"] == k):
                offset += dt.itemsize * el.count
                if li is None:
                    return None, offset
                idx = arr["idx"].astype(np.int64)
                if k == 3:
                    return idx.reshape(-1, 3), offset
                return _fan(idx.tolist()), offset
    # General path: item by item.
    polys = []
    for item in range(el.count):
        for i, p in enumerate(el.props):
            if p.count_dtype is None:
                sz = np.dtype(p.dtype).itemsize
                if offset + sz > len(data):
                    raise _ParseError(
                        f"truncated binary PLY: header says {el.count} {_plural(el.name)}, file holds {item}"
                    )
                offset += sz
                continue
            cdt = np.dtype(order + p.count_dtype)
            if offset + cdt.itemsize > len(data):
                raise _ParseError(
                    f"truncated binary PLY: header says {el.count} {_plural(el.name)}, file holds {item}"
                )
            k = int(np.frombuffer(data, dtype=cdt, count=1, offset=offset)[0])
            offset += cdt.itemsize
            idt = np.dtype(order + p.dtype)
            if offset + idt.itemsize * k > len(data):
                raise _ParseError(
                    f"truncated binary PLY: header says {el.count} {_plural(el.name)}, file holds {item}"
                )
            vals = np.frombuffer(data, dtype=idt, count=k, offset=offset)
            offset += idt.itemsize * k
            if i == li:
                polys.append(vals.astype(np.int64).tolist())
    return (_fan(polys) if li is not None else None), offset


# ---------------------------------------------------------------------------------------------
# PCD (Point Cloud Library)
# ---------------------------------------------------------------------------------------------

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


def _import_open3d(what: str):
    try:
        import open3d as o3d
    except ImportError:
        raise _ParseError(f"reading {what} needs open3d (pip install open3d)") from None
    return o3d


def _quiet_open3d(o3d):
    """open3d prints its own coloured warnings to stdout on bad files; we report errors ourselves."""
    return o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error)


def _open3d_points(path: Path) -> np.ndarray:
    """binary_compressed PCD (LZF) is left to open3d; an empty result is treated as an error."""
    o3d = _import_open3d("binary_compressed PCD files")
    with _quiet_open3d(o3d):
        pcd = o3d.io.read_point_cloud(str(path), format="pcd")
    pts = np.asarray(pcd.points, dtype=np.float64)
    if len(pts) == 0:
        raise _ParseError("open3d could not read this binary_compressed PCD file (or it holds no points)")
    return pts


# ---------------------------------------------------------------------------------------------
# Text (.xyz, .txt, .pts), numpy (.npy, .npz)
# ---------------------------------------------------------------------------------------------

_COMMENT = re.compile(r"^\s*(#|//)")


def _is_number_row(tokens: list[str]) -> bool:
    try:
        [float(t) for t in tokens]
    except ValueError:
        return False
    return bool(tokens)


def _read_text_points(path: Path) -> Geometry:
    text = _read_text(path).replace(",", " ").replace(";", " ")
    lines = [ln for ln in text.splitlines() if ln.strip() and not _COMMENT.match(ln)]
    if not lines:
        raise _ParseError("no points")
    first = lines[0].split()
    if not _is_number_row(first):
        lines = lines[1:]  # a header line such as "x y z nx ny nz"
    elif len(first) == 1 and len(lines) > 1:
        lines = lines[1:]  # .pts files that start with the point count
    if not lines:
        raise _ParseError("no points")
    ncol = len(lines[0].split())
    if ncol < 3:
        raise _ParseError(f"line 1 has {ncol} values — need at least x y z per line")
    try:
        arr = np.loadtxt(_stdio.StringIO("\n".join(lines)), usecols=(0, 1, 2), ndmin=2, dtype=np.float64)
    except ValueError as e:
        raise _ParseError(f"cannot parse numbers: {_short(e)}") from None
    return Geometry(arr)


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


# ---------------------------------------------------------------------------------------------
# Meshes: OFF, OBJ, STL, glTF
# ---------------------------------------------------------------------------------------------

_OFF_KEYWORD = re.compile(r"^(ST)?(C)?(N)?(4)?(n)?OFF", re.IGNORECASE)


def _read_off(path: Path) -> Geometry:
    text = _read_text(path)
    lines = []
    for ln in text.splitlines():
        ln = ln.split("#", 1)[0].strip()
        if ln:
            lines.append(ln)
    if not lines:
        raise _ParseError("no points")
    m = _OFF_KEYWORD.match(lines[0])
    if m is None:
        raise _ParseError("not an OFF file (first line does not start with OFF)")
    if m.group(4) or m.group(5):
        raise _ParseError("4OFF / nOFF (non-3D vertices) are not supported")
    # ModelNet writes "OFF490 518 0": the counts follow the keyword on the same line.
    rest = lines[0][m.end() :].split()
    body = lines[1:]
    if len(rest) < 2:
        if not body:
            raise _ParseError("OFF header has no vertex/face counts")
        rest = body[0].split()
        body = body[1:]
    try:
        nv, nf = int(rest[0]), int(rest[1])
    except (ValueError, IndexError):
        raise _ParseError(f"OFF counts line is not 'vertices faces edges': {' '.join(rest)!r}") from None
    if nv == 0:
        raise _ParseError("no points")
    if len(body) < nv:
        raise _ParseError(f"truncated OFF: header says {nv} vertices, file holds {len(body)}")
    vrows = [ln.split()[:3] for ln in body[:nv]]
    bad = next((i for i, r in enumerate(vrows) if len(r) < 3), None)
    if bad is not None:
        raise _ParseError(f"OFF vertex {bad} has fewer than 3 coordinates")
    verts = np.asarray(vrows, dtype=np.float64)
    frows = body[nv : nv + nf]
    if len(frows) < nf:
        raise _ParseError(f"truncated OFF: header says {nf} faces, file holds {len(frows)}")
    polys = []
    for i, ln in enumerate(frows):
        tok = ln.split()
        k = int(tok[0])
        if len(tok) < 1 + k:
            raise _ParseError(f"OFF face {i} declares {k} vertices but lists {len(tok) - 1}")
        polys.append([int(t) for t in tok[1 : 1 + k]])
    return Geometry(verts, _fan(polys) if nf else None)


def _read_obj(path: Path) -> Geometry:
    verts: list[list[str]] = []
    polys: list[list[int]] = []
    for lineno, raw in enumerate(_read_text(path).splitlines(), 1):
        tok = raw.split()
        if not tok:
            continue
        if tok[0] == "v":
            if len(tok) < 4:
                raise _ParseError(f"OBJ line {lineno}: vertex with fewer than 3 coordinates")
            verts.append(tok[1:4])
        elif tok[0] == "f":
            poly = []
            for t in tok[1:]:
                i = int(t.split("/", 1)[0])
                # OBJ indices are 1-based; negative ones count back from the latest vertex.
                poly.append(len(verts) + i if i < 0 else i - 1)
            if len(poly) < 3:
                raise _ParseError(f"OBJ line {lineno}: face with fewer than 3 vertices")
            polys.append(poly)
    if not verts:
        raise _ParseError("no points (no 'v' lines)")
    return Geometry(np.asarray(verts, dtype=np.float64), _fan(polys) if polys else None)


_STL_VERTEX = re.compile(rb"vertex\s+(\S+)\s+(\S+)\s+(\S+)")


def _read_stl(path: Path) -> Geometry:
    data = path.read_bytes()
    n = int(np.frombuffer(data, dtype="<u4", count=1, offset=80)[0]) if len(data) >= 84 else 0
    if len(data) >= 84 and len(data) == 84 + 50 * n:
        return _stl_binary(data, n)
    if data.lstrip().startswith(b"solid"):
        found = _STL_VERTEX.findall(data)
        if not found and len(data) >= 84 and len(data) >= 84 + 50 * n:
            # binary STLs often start their 80-byte header with "solid" too; trailing bytes are allowed
            return _stl_binary(data, n)
        if not found:
            raise _ParseError("ASCII STL holds no 'vertex' lines")
        if len(found) % 3:
            raise _ParseError(f"ASCII STL holds {len(found)} vertices, not a multiple of 3")
        verts = np.asarray(found, dtype=np.float64)
        return Geometry(verts, np.arange(len(verts), dtype=np.int64).reshape(-1, 3))
    if len(data) < 84:
        raise _ParseError("not an STL file (too short for a binary STL, no 'solid' keyword)")
    n = int(np.frombuffer(data, dtype="<u4", count=1, offset=80)[0])
    held = (len(data) - 84) // 50
    raise _ParseError(f"truncated binary STL: header says {n} triangles, file holds {held}")


def _stl_binary(data: bytes, n: int) -> Geometry:
    if n == 0:
        raise _ParseError("no points (binary STL with 0 triangles)")
    dt = np.dtype([("normal", "<f4", (3,)), ("v", "<f4", (3, 3)), ("attr", "<u2")])
    arr = np.frombuffer(data, dtype=dt, count=n, offset=84)
    verts = arr["v"].reshape(-1, 3).astype(np.float64)
    return Geometry(verts, np.arange(len(verts), dtype=np.int64).reshape(-1, 3))


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
