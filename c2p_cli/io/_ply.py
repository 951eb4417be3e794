"""PLY (ascii, binary little / big endian): vertices and, for meshes, faces."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._common import _BOM, Geometry, _fan, _ParseError, _plural

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
