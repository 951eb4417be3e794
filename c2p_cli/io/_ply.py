"""PLY (ascii, binary little / big endian): vertices and, for meshes, faces.

The header is read first (at most MAX_HEADER_BYTES); every element's declared count is checked
against the bytes left in the file before its body is read. Binary bodies are read a chunk at a
time; lists of uniform length (triangle meshes) are read as one structured array, and mixed lists
are walked with a tight loop over precomputed item ends instead of one numpy call per item.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from ._common import (
    _BOM,
    CHUNK_BYTES,
    Geometry,
    _FanRows,
    _ParseError,
    _plural,
    _quote,
    _read_exact,
    _read_head,
    _read_records_xyz,
    _Source,
    _xyz_dtype,
)
from ._textscan import LineReader, blocks, float_rows, int_table

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


_END_HEADER = re.compile(rb"end_header[ \t]*\r?\n")


def _ply_header(data: bytes) -> tuple[str, list[_PlyElement], int]:
    if not data.startswith(b"ply"):
        raise _ParseError("not a PLY file (does not start with 'ply')")
    m = _END_HEADER.search(data)
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
                raise _ParseError(f"unknown PLY format line: {_quote(line.strip())}")
            fmt = tok[1]
        elif tok[0] == "element":
            if len(tok) != 3 or not tok[2].isdigit():
                raise _ParseError(f"bad PLY element line: {_quote(line.strip())}")
            elements.append(_PlyElement(tok[1], int(tok[2]), []))
        elif tok[0] == "property":
            if not elements:
                raise _ParseError("PLY property before any element")
            if len(tok) == 5 and tok[1] == "list":
                if tok[2] not in _PLY_TYPES or tok[3] not in _PLY_TYPES:
                    raise _ParseError(f"unknown PLY property type in {_quote(line.strip())}")
                if _PLY_TYPES[tok[2]][0] == "f":
                    raise _ParseError(f"PLY list count must be an integer type: {_quote(line.strip())}")
                elements[-1].props.append(_PlyProp(tok[4], _PLY_TYPES[tok[3]], _PLY_TYPES[tok[2]]))
            elif len(tok) == 3:
                if tok[1] not in _PLY_TYPES:
                    raise _ParseError(f"unknown PLY property type {_quote(tok[1])}")
                elements[-1].props.append(_PlyProp(tok[2], _PLY_TYPES[tok[1]]))
            else:
                raise _ParseError(f"bad PLY property line: {_quote(line.strip())}")
    if not fmt:
        raise _ParseError("PLY header has no format line")
    return fmt, elements, m.end()


def _face_list_prop(el: _PlyElement) -> int | None:
    for i, p in enumerate(el.props):
        if p.count_dtype is not None and p.name in ("vertex_indices", "vertex_index"):
            return i
    return None


def _wanted(elements: list[_PlyElement]) -> list[_PlyElement]:
    """The elements to read: every one up to the vertex element and the face element (if any)."""
    last = max(i for i, e in enumerate(elements) if e.name in ("vertex", "face"))
    return elements[: last + 1]


def _read_ply(src: _Source) -> Geometry:
    with src.open() as fh:
        head = fh.read(6)
        bom = head.startswith(_BOM)  # editors on Windows prepend a byte-order mark
        if not head[3 if bom else 0 :].startswith(b"ply"):
            raise _ParseError("not a PLY file (does not start with 'ply')")
        fh.seek(3 if bom else 0)
        base = fh.tell()
        data, _ = _read_head(fh, _END_HEADER, "PLY")
        fmt, elements, body_start = _ply_header(data)
        vertex = next((e for e in elements if e.name == "vertex"), None)
        if vertex is None:
            raise _ParseError("PLY has no vertex element")
        names = [p.name for p in vertex.props]
        if not {"x", "y", "z"} <= set(names):
            raise _ParseError("PLY has no x/y/z properties")
        for p in vertex.props:
            if p.count_dtype is not None:
                raise _ParseError(f"PLY vertex element has a list property {_quote(p.name)} (not supported)")
        if vertex.count == 0:
            raise _ParseError("no points")
        src.check_count(vertex.count, "vertices")
        face = next((e for e in elements if e.name == "face"), None)
        if face is not None:
            src.check_count(face.count, "faces")
        body = base + body_start
        fh.seek(body)
        if fmt == "ascii":
            return _ply_ascii(src, fh, elements, src.size - body)
        order = "<" if fmt == "binary_little_endian" else ">"
        return _ply_binary(src, fh, elements, order, src.size - body)


def _ply_ascii(src: _Source, fh: BinaryIO, elements: list[_PlyElement], available: int) -> Geometry:
    # Each line holds at least one token and a separator per property (lists: at least their count).
    need = sum(e.count * 2 * max(len(e.props), 1) for e in _wanted(elements))
    if need > available:
        worst = max(_wanted(elements), key=lambda e: e.count)
        src.check_fits(worst.count, 2 * max(len(worst.props), 1), available, _plural(worst.name))
    lines = LineReader(blocks(fh, kind="PLY"))
    verts, faces = None, None
    for el in _wanted(elements):
        if el.name == "vertex":
            verts = _ascii_vertices(lines, el)
        elif el.name == "face":
            faces = _ascii_faces(lines, el, _vertex_count(elements), src.max_points)
        else:
            got = sum(k for _, k in lines.take(el.count))
            if got < el.count:
                raise _truncated_ascii(el, got)
    return Geometry(verts, faces)


def _truncated_ascii(el: _PlyElement, got: int) -> _ParseError:
    return _ParseError(f"truncated ASCII PLY: header says {el.count} {_plural(el.name)}, file holds {got}")


def _ascii_vertices(lines: LineReader, el: _PlyElement) -> np.ndarray:
    cols = [next(i for i, p in enumerate(el.props) if p.name == a) for a in ("x", "y", "z")]
    out = np.empty((el.count, 3), dtype=np.float64)
    done = 0
    for region, k in lines.take(el.count):
        rows = float_rows(region, ncols=len(el.props), usecols=cols, what="ASCII PLY vertex", first_row=done)
        if len(rows) != k:
            raise _ParseError(f"ASCII PLY vertex lines {done} to {done + k - 1} do not parse as {k} rows")
        out[done : done + k] = rows
        done += k
    if done < el.count:
        raise _truncated_ascii(el, done)
    return out


def _vertex_count(elements: list[_PlyElement]) -> int | None:
    return next((e.count for e in elements if e.name == "vertex"), None)


def _face_rows(el: _PlyElement, n_vertices: int | None, max_triangles: int) -> _FanRows:
    return _FanRows(n_vertices, f"the {n_vertices} vertices of the mesh", max_triangles, capacity=el.count)


def _ascii_faces(lines: LineReader, el: _PlyElement, n_vertices: int | None, max_triangles: int) -> np.ndarray | None:
    li = _face_list_prop(el)
    if li is not None and any(p.count_dtype is not None for p in el.props[:li]):
        li = None  # a list before the vertex list: not a layout any exporter writes
    rows = _face_rows(el, n_vertices, max_triangles)
    done = 0
    for region, k in lines.take(el.count):
        if li is not None:
            _ascii_polygons(region, li, done, "ASCII PLY face", rows)
        done += k
    if done < el.count:
        raise _truncated_ascii(el, done)
    return rows.result() if li is not None else None


def _ascii_polygons(region: bytes, li: int, first_row: int, what: str, rows: _FanRows) -> None:
    _polygons(*int_table(region, width=li + 4), li, first_row, what, rows)


def _polygons(values: np.ndarray, valid: np.ndarray, per_line: np.ndarray, li: int, first_row: int, what: str,
              rows: _FanRows) -> None:
    """Fan triangles of lines "[li scalars] k i0 .. ik-1 [more]" (OFF faces have li = 0), into `rows`."""
    line_start = np.cumsum(per_line) - per_line
    short = np.flatnonzero(per_line <= li)
    if len(short):
        raise _ParseError(f"{what} {first_row + int(short[0])} has no vertex count")
    kpos = line_start + li
    if not valid[kpos].all():
        bad = int(np.flatnonzero(~valid[kpos])[0])
        raise _ParseError(f"{what} {first_row + bad}: vertex count is not an integer")
    k = values[kpos]
    listed = per_line - li - 1
    wrong = np.flatnonzero((k < 0) | (k > listed))
    if len(wrong):
        i = int(wrong[0])
        raise _ParseError(f"{what} {first_row + i} declares {int(k[i])} vertices but lists {int(listed[i])}")
    starts = kpos + 1
    if not valid.all():  # every index token used must be an integer
        invalid_before = np.concatenate([[0], np.cumsum(~valid)])
        bad_lines = np.flatnonzero(invalid_before[starts + k] - invalid_before[starts] > 0)
        if len(bad_lines):
            raise _ParseError(f"{what} {first_row + int(bad_lines[0])}: a vertex index is not an integer")
    rows.add_fans(values, starts, k, f"{what} {first_row + int(np.argmax(k))}")


# ---------------------------------------------------------------------------------------------
# Binary
# ---------------------------------------------------------------------------------------------


def _min_item_bytes(el: _PlyElement) -> int:
    return sum(np.dtype(p.count_dtype or p.dtype).itemsize for p in el.props)


def _truncated(el: _PlyElement, held: int) -> _ParseError:
    return _ParseError(f"truncated binary PLY: header says {el.count} {_plural(el.name)}, file holds {held}")


def _ply_binary(src: _Source, fh: BinaryIO, elements: list[_PlyElement], order: str, available: int) -> Geometry:
    verts, faces = None, None
    offset = fh.tell()
    end = offset + available
    for el in _wanted(elements):
        left = end - offset
        if el.count * _min_item_bytes(el) > left:
            if all(p.count_dtype is None for p in el.props):
                raise _truncated(el, left // max(_min_item_bytes(el), 1))
            src.check_fits(el.count, _min_item_bytes(el), left, _plural(el.name))
        fh.seek(offset)
        if all(p.count_dtype is None for p in el.props):
            dt = np.dtype([(f"p{i}", order + p.dtype) for i, p in enumerate(el.props)])
            if el.name == "vertex":
                names = [p.name for p in el.props]
                fields = tuple(f"p{names.index(a)}" for a in ("x", "y", "z"))
                out_dtype = _xyz_dtype(*(dt[f] for f in fields))
                verts = _read_records_xyz(fh, el.count, dt, fields, out_dtype)
            offset += dt.itemsize * el.count
            continue
        tris, offset = _binary_lists(fh, offset, end, el, order, _vertex_count(elements), src.max_points)
        if el.name == "face":
            faces = tris
    return Geometry(verts, faces)


def _binary_lists(fh: BinaryIO, offset: int, end: int, el: _PlyElement, order: str,
                  n_vertices: int | None, max_triangles: int) -> tuple[np.ndarray | None, int]:
    """Read an element with list properties from `offset`; returns (fan triangles of its vertex
    index list, or None when it has none; the offset after it)."""
    li = _face_list_prop(el) if el.name == "face" else None
    rows = _face_rows(el, n_vertices, max_triangles) if li is not None else _FanRows(None, "", max_triangles, capacity=16)
    done = 0
    while done < el.count:
        # Fast path: a run of items whose lists all have the length of the next item's.
        n, offset = _uniform_run(fh, offset, end, el, order, el.count - done, li, rows)
        done += n
        if done < el.count:
            n, offset = _walk(fh, offset, end, el, order, el.count - done, li, rows)
            done += n
    return (rows.result() if li is not None else None), offset


def _layout(el: _PlyElement, order: str, ks: list[int]) -> np.dtype:
    fields = []
    for i, p in enumerate(el.props):
        if p.count_dtype is None:
            fields.append((f"p{i}", order + p.dtype))
        else:
            fields.append((f"n{i}", order + p.count_dtype))
            if ks[i]:
                fields.append((f"v{i}", order + p.dtype, (ks[i],)))
    return np.dtype(fields)


def _item_counts_at(fh: BinaryIO, offset: int, end: int, el: _PlyElement, order: str) -> list[int] | None:
    """The list lengths of the item at `offset`, or None when the file ends inside it."""
    ks = [0] * len(el.props)
    pos = offset
    for i, p in enumerate(el.props):
        size = np.dtype(p.dtype).itemsize
        if p.count_dtype is None:
            pos += size
            continue
        cdt = np.dtype(order + p.count_dtype)
        if pos + cdt.itemsize > end:
            return None
        fh.seek(pos)
        k = int(np.frombuffer(fh.read(cdt.itemsize), dtype=cdt)[0])
        if k < 0:
            raise _ParseError(f"binary PLY {el.name} list {_quote(p.name)} has a negative length ({k})")
        ks[i] = k
        pos += cdt.itemsize + k * size
    return ks if pos <= end else None


def _uniform_run(fh, offset, end, el, order, left, li, rows) -> tuple[int, int]:
    """Items read as one structured array while their lists keep the first item's lengths."""
    ks = _item_counts_at(fh, offset, end, el, order)
    if ks is None:
        raise _truncated(el, el.count - left)
    dt = _layout(el, order, ks)
    per = max(1, CHUNK_BYTES // dt.itemsize)
    done = 0
    while done < left:
        n = min(per, left - done, (end - offset) // dt.itemsize)
        if n == 0:
            return done, offset  # the walk reports where the file ends
        fh.seek(offset)
        arr = np.frombuffer(_read_exact(fh, n * dt.itemsize), dtype=dt, count=n)
        same = np.ones(n, dtype=bool)
        for i, k in enumerate(ks):
            if el.props[i].count_dtype is not None:
                same &= arr[f"n{i}"] == k
        m = n if same.all() else int(np.argmin(same))
        if li is not None and m:
            idx = arr[f"v{li}"][:m] if ks[li] else np.empty((m, 0), dtype=np.int64)
            idx = np.asarray(idx, dtype=np.int64).reshape(m, ks[li])
            if ks[li] == 3:
                rows.extend(idx)
            elif ks[li] > 3:
                flat = idx.reshape(-1)
                rows.add_fans(flat, np.arange(m, dtype=np.int64) * ks[li], np.full(m, ks[li]))
        done += m
        offset += m * dt.itemsize
        if m < n:
            return done, offset
    return done, offset


def _walk(fh, offset, end, el, order, left, li, rows) -> tuple[int, int]:
    """Items of mixed list lengths, a window of the file at a time: a tight loop follows the chain
    of item starts (one count read per list), then numpy gathers the lists of all those items."""
    fh.seek(offset)
    buf = fh.read(min(CHUNK_BYTES + (1 << 16), end - offset))
    if not buf:
        raise _truncated(el, el.count - left)
    chain = _chain(buf, el, order, min(CHUNK_BYTES, len(buf)), left)
    if not chain:  # one item longer than the window: read it on its own
        ks = _item_counts_at(fh, offset, end, el, order)
        if ks is None:
            raise _truncated(el, el.count - left)
        if li is not None:
            rows.check_corners(ks[li], "a face")  # before its indices are read
            rows.check_triangles(max(ks[li] - 2, 0))
        dt = _layout(el, order, ks)
        fh.seek(offset)
        item = np.frombuffer(_read_exact(fh, dt.itemsize), dtype=dt, count=1)
        if li is not None and ks[li] >= 3:
            idx = np.asarray(item[f"v{li}"][0], dtype=np.int64)
            rows.add_fans(idx, np.zeros(1, np.int64), np.array([ks[li]]))
        return 1, offset + dt.itemsize
    if li is not None:
        _window_polygons(buf, np.asarray(chain[:-1], dtype=np.int64), el, order, li, rows)
    return len(chain) - 1, offset + chain[-1]


def _chain(buf: bytes, el: _PlyElement, order: str, limit: int, left: int) -> list[int]:
    """Starts of consecutive items from byte 0 of `buf` while they start before `limit` and end
    inside `buf` (at most `left` items), followed by the end of the last one; [] when none fits."""
    plan = []  # (bytes before the count, struct format of the count, count size, item size)
    fixed = 0
    for p in el.props:
        size = np.dtype(p.dtype).itemsize
        if p.count_dtype is None:
            fixed += size
        else:
            cdt = np.dtype(order + p.count_dtype)
            plan.append((fixed, order + cdt.char, cdt.itemsize, size))
            fixed = 0
    tail = fixed
    size_buf = len(buf)
    out: list[int] = []
    pos = 0
    if len(plan) == 1 and plan[0][1][-1] == "B":  # one uchar-counted list: the usual face layout
        pre, _, _, size = plan[0]
        step = pre + 1 + tail
        while pos < limit and len(out) < left and pos + pre < size_buf:
            q = pos + step + buf[pos + pre] * size
            if q > size_buf:
                break
            out.append(pos)
            pos = q
    else:
        while pos < limit and len(out) < left:
            q = pos
            for pre, fmt, csize, size in plan:
                q += pre
                if q + csize > size_buf:
                    q = -1
                    break
                k = struct.unpack_from(fmt, buf, q)[0]
                if k < 0:
                    raise _ParseError(f"binary PLY {el.name} list has a negative length ({k})")
                q += csize + k * size
            if q < 0 or q + tail > size_buf:
                break
            out.append(pos)
            pos = q + tail
    if out:
        out.append(pos)
    return out


def _gather(a: np.ndarray, pos: np.ndarray, dt: np.dtype, ok: np.ndarray) -> np.ndarray:
    """Values of type `dt` at byte positions `pos` of `a` (0 where they would not fit)."""
    inside = ok & (pos + dt.itemsize <= len(a))
    safe = np.where(inside, pos, 0)
    raw = np.stack([a[np.minimum(safe + j, len(a) - 1)] for j in range(dt.itemsize)], axis=1)
    vals = np.ascontiguousarray(raw).view(dt).reshape(-1).astype(np.int64)
    return np.where(inside, vals, -1)


def _window_polygons(buf: bytes, starts: np.ndarray, el: _PlyElement, order: str, li: int, rows: _FanRows) -> None:
    a = np.frombuffer(buf, dtype=np.uint8)
    pos = starts.copy()
    ok = np.ones(len(starts), dtype=bool)
    for i, p in enumerate(el.props):
        size = np.dtype(p.dtype).itemsize
        if p.count_dtype is None:
            pos += size
            continue
        cdt = np.dtype(order + p.count_dtype)
        k = _gather(a, pos, cdt, ok)
        pos += cdt.itemsize
        if i == li:
            idt = np.dtype(order + p.dtype)
            k_idx = np.repeat(pos, k) + (np.arange(int(k.sum())) - np.repeat(np.cumsum(k) - k, k)) * size
            vals = _gather(a, k_idx, idt, np.ones(len(k_idx), dtype=bool))
            rows.add_fans(vals, np.cumsum(k) - k, k)
            return
        pos += k * size
