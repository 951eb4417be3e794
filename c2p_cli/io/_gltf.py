"""glTF 2.0 meshes (.gltf with embedded or neighbouring buffers, .glb), read with numpy.

No C++ parser sees the file: the JSON goes to Python's json module and every accessor is
checked (component type, count against `max_points`, offset + stride x count against its buffer
view, the view against its buffer) before numpy views the bytes. The default scene's node tree is
walked with each node's transform (matrix, or translation / rotation / scale) applied, as glTF
viewers place meshes; as glTF requires, each node has at most one parent (a node listed as a child
twice, a cycle, a scene root that is a child: refused before anything is placed), and every
placement of a mesh counts against `max_points` from the declared counts before any buffer is
read. An external buffer must be a regular file inside the glTF's folder (opened without blocking,
so a FIFO cannot hang the read). Triangles, strips and fans become triangles; point and line primitives give
vertices only. Draco / meshopt compressed and sparse accessors are refused with a clear error.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import struct
from urllib.parse import unquote

import numpy as np

from ._common import MAX_HEADER_BYTES, Geometry, _ParseError, _quote, _read_exact, _short, _Source

_GLB_MAGIC = b"glTF"
_JSON_CHUNK = 0x4E4F534A
_BIN_CHUNK = 0x004E4942
_COMPONENTS = {5120: "i1", 5121: "u1", 5122: "<i2", 5123: "<u2", 5125: "<u4", 5126: "<f4"}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}
_UNSUPPORTED = ("KHR_draco_mesh_compression", "EXT_meshopt_compression", "KHR_meshopt_compression")
_MAX_DEPTH = 64


def _read_gltf(src: _Source) -> Geometry:
    # Infinite coordinates or transforms (JSON's Infinity, float32 inf) make NaN rows, which the
    # callers drop as they drop any non-finite point: numpy's warnings about them must not print.
    with np.errstate(all="ignore"):
        return _read_gltf_checked(src)


def _read_gltf_checked(src: _Source) -> Geometry:
    with src.open() as fh:
        head = fh.read(12)
        if head[:4] == _GLB_MAGIC:
            doc, bin_chunk = _glb(src, fh, head)
        else:
            if src.path.suffix.lower() == ".glb":
                raise _ParseError("not a GLB file (does not start with 'glTF')")
            fh.seek(0)
            doc, bin_chunk = _json(fh.read()), None
    return _Document(src, doc, bin_chunk).geometry()


def _json(raw: bytes) -> dict:
    try:
        doc = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as e:
        raise _ParseError(f"glTF JSON does not parse ({_short(e, 100)})") from None
    if not isinstance(doc, dict):
        raise _ParseError("glTF JSON is not an object")
    return doc


def _glb(src: _Source, fh, head: bytes) -> tuple[dict, bytes | None]:
    if len(head) < 12:
        raise _ParseError("truncated GLB header")
    version, length = struct.unpack("<II", head[4:12])
    if version != 2:
        raise _ParseError(f"GLB version {version} is not supported (glTF 2.0 only)")
    if length > src.size:
        raise _ParseError(f"truncated GLB: header says {length} bytes, file holds {src.size}")
    doc, bin_chunk = None, None
    pos = 12
    while pos + 8 <= length:
        fh.seek(pos)
        clen, ctype = struct.unpack("<II", _read_exact(fh, 8))
        if pos + 8 + clen > length:
            raise _ParseError(f"truncated GLB: a chunk of {clen} bytes runs past the file's end")
        if ctype == _JSON_CHUNK and doc is None:
            if clen > MAX_HEADER_BYTES * 64:
                raise _ParseError(f"GLB JSON chunk of {clen} bytes is too large")
            doc = _json(_read_exact(fh, clen))
        elif ctype == _BIN_CHUNK and bin_chunk is None:
            bin_chunk = _read_exact(fh, clen)
        pos += 8 + clen
    if doc is None:
        raise _ParseError("GLB has no JSON chunk")
    return doc, bin_chunk


def _list(doc: dict, key: str) -> list:
    value = doc.get(key, [])
    if not isinstance(value, list):
        raise _ParseError(f"glTF {key} is not a list")
    return value


def _int(obj: dict, key: str, default: int | None = None) -> int:
    value = obj.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _ParseError(f"glTF {key} must be a non-negative integer, got {_quote(str(value), 30)}")
    return value


def _item(items: list, index, what: str) -> dict:
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(items):
        raise _ParseError(f"glTF refers to {what} {_quote(str(index), 20)}, which does not exist")
    item = items[index]
    if not isinstance(item, dict):
        raise _ParseError(f"glTF {what} {index} is not an object")
    return item


class _Document:
    def __init__(self, src: _Source, doc: dict, bin_chunk: bytes | None):
        self.src, self.doc, self.bin = src, doc, bin_chunk
        asset = doc.get("asset", {})
        if isinstance(asset, dict) and str(asset.get("version", "2.0")).split(".")[0] != "2":
            raise _ParseError(f"glTF version {_quote(str(asset.get('version')), 20)} is not supported (2.0 only)")
        required = doc.get("extensionsRequired", [])
        for ext in required if isinstance(required, list) else []:
            if ext in _UNSUPPORTED:
                raise _ParseError(f"glTF uses {ext} (compressed meshes are not supported)")
        self.buffers: dict[int, bytes] = {}
        self.budget_vertices = src.max_points
        self.budget_triangles = src.max_points

    # --- bytes -----------------------------------------------------------------------------

    def buffer(self, index: int) -> bytes:
        if index in self.buffers:
            return self.buffers[index]
        buf = _item(_list(self.doc, "buffers"), index, "buffer")
        length = _int(buf, "byteLength")
        uri = buf.get("uri")
        if uri is None:
            if self.bin is None:
                raise _ParseError(f"glTF buffer {index} has no uri and the file has no binary chunk")
            data = self.bin
        elif not isinstance(uri, str):
            raise _ParseError(f"glTF buffer {index} uri is not a string")
        elif uri.startswith("data:"):
            try:
                data = base64.b64decode(uri.split(",", 1)[1], validate=False)
            except (IndexError, ValueError):
                raise _ParseError(f"glTF buffer {index} has a data uri that does not decode") from None
        else:
            data = self._external(index, uri, length)
        if len(data) < length:
            raise _ParseError(f"glTF buffer {index} declares {length} bytes, holds {len(data)}")
        self.buffers[index] = data
        return data

    def _external(self, index: int, uri: str, length: int) -> bytes:
        folder = self.src.path.resolve().parent
        target = (folder / unquote(uri)).resolve()
        if "://" in uri or not target.is_relative_to(folder):
            raise _ParseError(f"glTF buffer {index} points outside the file's folder: {_quote(uri)}")
        try:
            # O_NONBLOCK: a FIFO (or a device) named by the uri must not hang the read; only a
            # regular file is read
            fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        except OSError as e:
            raise _ParseError(f"glTF buffer {index} ({_quote(uri)}) cannot be read: {e.strerror or e}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise _ParseError(f"glTF buffer {index} ({_quote(uri)}) is not a regular file")
            if st.st_size < length:  # before read() allocates what the file declares
                raise _ParseError(f"glTF buffer {index} declares {length} bytes, holds {st.st_size}")
        except BaseException:
            os.close(fd)
            raise
        with open(fd, "rb") as f:
            return f.read(length)

    def accessor(self, index, what: str, *, limit: int) -> np.ndarray:
        """The accessor's elements as an array [count, width], every size checked first."""
        acc = _item(_list(self.doc, "accessors"), index, "accessor")
        if "sparse" in acc:
            raise _ParseError(f"glTF {what} accessor {index} is sparse (not supported)")
        ctype = acc.get("componentType")
        if ctype not in _COMPONENTS:
            raise _ParseError(f"glTF {what} accessor {index} has an unknown componentType {_quote(str(ctype), 20)}")
        width = _WIDTH.get(acc.get("type"))
        if width is None:
            raise _ParseError(f"glTF {what} accessor {index} has an unknown type {_quote(str(acc.get('type')), 20)}")
        count = _int(acc, "count")
        if count > limit:
            raise _ParseError(f"glTF {what} accessor {index} declares {count} elements, more than the limit of {limit} (max_points)")
        dt = np.dtype(_COMPONENTS[ctype])
        elem = dt.itemsize * width
        if "bufferView" not in acc:  # all zeros, by the specification
            return np.zeros((count, width), dtype=dt)
        view = _item(_list(self.doc, "bufferViews"), acc["bufferView"], "bufferView")
        data = self.buffer(_int(view, "buffer"))
        v_off, v_len = _int(view, "byteOffset", 0), _int(view, "byteLength")
        stride = _int(view, "byteStride", 0) or elem
        a_off = _int(acc, "byteOffset", 0)
        if v_off + v_len > len(data):
            raise _ParseError(f"glTF bufferView {acc['bufferView']} runs past the end of its buffer")
        if stride < elem:
            raise _ParseError(f"glTF {what} accessor {index}: byteStride {stride} is smaller than an element ({elem})")
        if count and a_off + stride * (count - 1) + elem > v_len:
            raise _ParseError(f"glTF {what} accessor {index} runs past the end of its bufferView")
        if count == 0:
            return np.zeros((0, width), dtype=dt)
        arr = np.ndarray((count, width), dtype=dt, buffer=data, offset=v_off + a_off, strides=(stride, dt.itemsize))
        out = np.array(arr)
        if acc.get("normalized") and dt.kind in "iu":
            info = np.iinfo(dt)
            out = np.maximum(out / info.max, -1.0)
        return out

    # --- scene -----------------------------------------------------------------------------

    def geometry(self) -> Geometry:
        meshes = _list(self.doc, "meshes")
        if not meshes:
            raise _ParseError("glTF holds no mesh")
        placed = self.instances()
        self._check_instanced_vertices(meshes, placed)
        read: dict[int, list[tuple[np.ndarray, np.ndarray | None]]] = {}
        vert_parts: list[np.ndarray] = []
        parts: list[tuple[int, np.ndarray]] = []
        base = n_tris = 0
        for mesh_index, matrix in placed:
            if mesh_index not in read:  # a mesh placed by several nodes is read once
                read[mesh_index] = self.primitives(meshes, mesh_index)
            for pos, tris in read[mesh_index]:
                if tris is not None and len(tris):
                    n_tris += len(tris)
                    if n_tris > self.src.max_points:
                        raise _ParseError(f"glTF places more than {self.src.max_points} triangles (max_points)")
                    parts.append((base, tris))
                if matrix is not None:
                    pos = pos.astype(np.float64) @ matrix[:3, :3].T + matrix[:3, 3]
                vert_parts.append(pos)
                base += len(pos)
        if not vert_parts:
            raise _ParseError("glTF holds no mesh with vertex positions")
        dtype = np.float32 if all(v.dtype == np.float32 for v in vert_parts) else np.float64
        verts = np.concatenate([v.astype(dtype, copy=False) for v in vert_parts])
        faces = [t + b for b, t in parts]
        return Geometry(verts, np.concatenate(faces) if faces else None)

    def _check_instanced_vertices(self, meshes: list, placed: list[tuple[int, np.ndarray | None]]) -> None:
        """Every placement of every mesh counts against max_points, from the accessors' declared
        counts, before any buffer is read."""
        per_mesh: dict[int, int] = {}
        total = 0
        for mesh_index, _ in placed:
            if mesh_index not in per_mesh:
                per_mesh[mesh_index] = sum(
                    _int(_item(_list(self.doc, "accessors"), prim["attributes"]["POSITION"], "accessor"), "count")
                    for prim in self._primitive_list(meshes, mesh_index)
                )
            total += per_mesh[mesh_index]
        if total > self.src.max_points:
            raise _ParseError(
                f"glTF places {total} vertices ({len(placed)} mesh instances), "
                f"more than the limit of {self.src.max_points} (max_points)"
            )

    def _primitive_list(self, meshes: list, mesh_index) -> list[dict]:
        """The mesh's primitives that have vertex positions (compressed ones refused)."""
        mesh = _item(meshes, mesh_index, "mesh")
        out = []
        for prim in _list(mesh, "primitives"):
            if not isinstance(prim, dict):
                raise _ParseError(f"glTF mesh {mesh_index} has a primitive that is not an object")
            exts = prim.get("extensions", {})
            for ext in exts if isinstance(exts, dict) else []:
                if ext in _UNSUPPORTED:
                    raise _ParseError(f"glTF mesh {mesh_index} uses {ext} (compressed meshes are not supported)")
            attrs = prim.get("attributes", {})
            if isinstance(attrs, dict) and "POSITION" in attrs:
                out.append(prim)
        return out

    def primitives(self, meshes: list, mesh_index: int) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """(vertices, triangles or None) of each primitive of a mesh, in the mesh's own frame."""
        out = []
        for prim in self._primitive_list(meshes, mesh_index):
            pos = self.accessor(prim["attributes"]["POSITION"], "POSITION", limit=self.budget_vertices)
            if pos.shape[1] != 3:
                raise _ParseError(f"glTF mesh {mesh_index}: POSITION is not VEC3")
            self.budget_vertices -= len(pos)
            out.append((pos, self.triangles(prim, len(pos), mesh_index)))
        return out

    def triangles(self, prim: dict, n_vertices: int, mesh_index: int) -> np.ndarray | None:
        mode = prim.get("mode", 4)
        if mode not in (0, 1, 2, 3, 4, 5, 6):
            raise _ParseError(f"glTF mesh {mesh_index} has an unknown primitive mode {_quote(str(mode), 20)}")
        if mode < 4:
            return None
        if "indices" in prim:
            idx = self.accessor(prim["indices"], "indices", limit=3 * self.budget_triangles + 2)
            if idx.shape[1] != 1 or idx.dtype.kind not in "iu":
                raise _ParseError(f"glTF mesh {mesh_index}: indices must be unsigned integer scalars")
            idx = idx.reshape(-1).astype(np.int64)
            if len(idx) and idx.max() >= n_vertices:
                raise _ParseError(f"glTF mesh {mesh_index}: an index refers to a vertex that does not exist")
        else:
            idx = np.arange(n_vertices, dtype=np.int64)
        if mode == 4:
            tris = idx[: len(idx) // 3 * 3].reshape(-1, 3)
        elif len(idx) < 3:
            tris = np.empty((0, 3), dtype=np.int64)
        elif mode == 5:  # strip: alternate windings
            i = np.arange(len(idx) - 2)
            tris = np.stack([idx[i], idx[i + 1], idx[i + 2]], axis=1)
            tris[1::2, [0, 1]] = tris[1::2, [1, 0]]
        else:  # fan
            i = np.arange(1, len(idx) - 1)
            tris = np.stack([np.full(len(i), idx[0]), idx[i], idx[i + 1]], axis=1)
        if len(tris) > self.budget_triangles:
            raise _ParseError(f"glTF holds more than {self.src.max_points} triangles (max_points)")
        self.budget_triangles -= len(tris)
        return tris

    def instances(self) -> list[tuple[int, np.ndarray | None]]:
        """(mesh index, world matrix or None) for every mesh placed in the default scene.

        glTF gives each node at most one parent and makes a scene's nodes roots: a node listed as a
        child twice, or a root that is also a child, is refused before anything is expanded, so a
        few kilobytes of nodes that share children cannot place a mesh exponentially many times,
        and the walk visits each node at most once.
        """
        nodes = _list(self.doc, "nodes")
        parent = _parents(nodes)
        scenes = _list(self.doc, "scenes")
        if scenes:
            roots = _list(_item(scenes, self.doc.get("scene", 0), "scene"), "nodes")
        elif nodes:
            roots = [i for i in range(len(nodes)) if i not in parent]
        else:
            return [(i, None) for i in range(len(_list(self.doc, "meshes")))]
        seen: set[int] = set()
        for root in roots:
            _index(root, len(nodes), "node")
            if root in parent or root in seen:
                why = f"a child of node {parent[root]}" if root in parent else "listed twice"
                raise _ParseError(f"glTF scene node {root} is {why} (a scene's nodes are roots, each once)")
            seen.add(root)
        placed = []
        stack = [(r, None, 0) for r in reversed(roots)]
        while stack:
            index, world_of_parent, depth = stack.pop()
            if depth > _MAX_DEPTH:
                raise _ParseError(f"glTF node tree is deeper than {_MAX_DEPTH} levels")
            node = _item(nodes, index, "node")
            local = _local_matrix(node, index)
            world = world_of_parent if local is None else local if world_of_parent is None else world_of_parent @ local
            if "mesh" in node:
                placed.append((node["mesh"], world))
            stack.extend((child, world, depth + 1) for child in reversed(_list(node, "children")))
        return placed


def _index(value, n: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < n:
        raise _ParseError(f"glTF refers to {what} {_quote(str(value), 20)}, which does not exist")
    return value


def _parents(nodes: list) -> dict[int, int]:
    """child -> parent over all nodes; a child listed twice (a shared node) or a node that is its
    own ancestor (a cycle) is refused."""
    parent: dict[int, int] = {}
    for i, node in enumerate(nodes):
        if not isinstance(node, dict):
            raise _ParseError(f"glTF node {i} is not an object")
        for child in _list(node, "children"):
            child = _index(child, len(nodes), "node")
            if child in parent:
                where = f"twice among node {i}'s children" if parent[child] == i else f"a child of nodes {parent[child]} and {i}"
                raise _ParseError(f"glTF node {child} is {where} (a node may have one parent)")
            parent[child] = i
    visited: dict[int, int] = {}  # node -> the walk up its ancestors that reached it first
    for start in parent:
        node = start
        while node in parent and node not in visited:
            visited[node] = start
            node = parent[node]
        if visited.get(node) == start and node in parent:  # this walk came back to itself
            raise _ParseError(f"glTF node tree has a cycle (through node {node})")
    return parent


def _local_matrix(node: dict, index: int) -> np.ndarray | None:
    try:
        if "matrix" in node:
            m = np.asarray(node["matrix"], dtype=np.float64)
            if m.shape != (16,):
                raise ValueError
            m = m.reshape(4, 4).T  # column-major
            return None if np.array_equal(m, np.eye(4)) else m
        t = np.asarray(node.get("translation", [0, 0, 0]), dtype=np.float64).reshape(3)
        x, y, z, w = np.asarray(node.get("rotation", [0, 0, 0, 1]), dtype=np.float64).reshape(4)
        s = np.asarray(node.get("scale", [1, 1, 1]), dtype=np.float64).reshape(3)
    except (ValueError, TypeError):
        raise _ParseError(f"glTF node {index} has a malformed transform") from None
    if not (t.any() or (x, y, z) != (0, 0, 0) or (s != 1).any()):
        return None
    rot = np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])  # fmt: skip
    m = np.eye(4)
    m[:3, :3] = rot * s
    m[:3, 3] = t
    return m
