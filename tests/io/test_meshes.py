"""Meshes (OFF, OBJ, STL, glTF / GLB): faces and polygons, transforms, surface sampling within
max_points, glTF read without open3d (trimesh as the reference), fallbacks and errors."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from clip2point import io
from clip2point.errors import InputFileError
from clip2point.io import read_cloud, read_points
from tests.io.reader_helpers import (
    CUBE_QUADS,
    CUBE_V,
    PTS,
    assert_error,
    error_of,
)

# ---------------------------------------------------------------------------------------------
# OFF, OBJ, STL
# ---------------------------------------------------------------------------------------------


def _check_cube_mesh(path: Path):
    v, f = io.read_mesh(path)
    np.testing.assert_allclose(v, CUBE_V, atol=1e-6)
    assert f.shape == (12, 3) and f.dtype == np.int64
    assert io._triangle_areas(v.astype(np.float64), f).sum() == pytest.approx(6.0)


@pytest.mark.parametrize("broken_header", [False, True])
def test_off(tmp_path, broken_header):
    counts = f"{len(CUBE_V)} {len(CUBE_QUADS)} 0"
    head = f"OFF{counts}\n" if broken_header else f"OFF\n# comment line\n{counts}\n"
    body = "".join(f"{x} {y} {z}\n" for x, y, z in CUBE_V) + "".join(
        f"4 {a} {b} {c} {d}\n" for a, b, c, d in CUBE_QUADS
    )
    (tmp_path / "c.off").write_text(head + body)
    _check_cube_mesh(tmp_path / "c.off")


def test_off_modelnet_writer_and_coff(tmp_path):
    tris = io._fan(CUBE_QUADS)
    io.write_off(tmp_path / "m.off", CUBE_V, tris, modelnet_header=True)
    assert (tmp_path / "m.off").read_text().startswith("OFF8 12 0\n")
    _check_cube_mesh(tmp_path / "m.off")
    body = "".join(f"{x} {y} {z} 255 0 0 255\n" for x, y, z in CUBE_V)
    body += "".join(f"4 {a} {b} {c} {d} 0.5 0.5 0.5\n" for a, b, c, d in CUBE_QUADS)
    (tmp_path / "c.off").write_text("COFF\n8 6 12\n" + body)
    _check_cube_mesh(tmp_path / "c.off")


def test_obj_polygons_slashes_negative_indices(tmp_path):
    lines = (
        ["# cube", "o cube", "mtllib none.mtl"]
        + [f"v {x} {y} {z} 1.0" for x, y, z in CUBE_V]
        + ["vt 0 0", "vn 0 0 1"]
    )
    # Half the faces as absolute v/vt/vn indices, half as negative (relative) v//vn ones.
    for k, quad in enumerate(CUBE_QUADS):
        if k % 2:
            lines.append("f " + " ".join(f"{i - 8}//1" for i in quad))
        else:
            lines.append("f " + " ".join(f"{i + 1}/1/1" for i in quad))
    (tmp_path / "c.obj").write_text("\n".join(lines) + "\n")
    _check_cube_mesh(tmp_path / "c.obj")


@pytest.mark.parametrize("style", ["crlf", "indented", "tabs", "mixed_polygons"])
def test_obj_line_styles_read_alike(tmp_path, style):
    lines = [f"v {x} {y} {z}" for x, y, z in CUBE_V] + ["vn 0 0 1", "vt 0 0"]
    lines += ["f " + " ".join(f"{i + 1}/1/1" for i in quad) for quad in CUBE_QUADS]
    if style == "mixed_polygons":  # one quad as two triangles: same surface, other fan
        q = CUBE_QUADS[0]
        lines[-6] = f"f {q[0] + 1} {q[1] + 1} {q[2] + 1}\nf {q[0] + 1} {q[2] + 1} {q[3] + 1}"
    text = "\n".join(lines) + "\n"
    if style == "crlf":
        text = text.replace("\n", "\r\n")
    elif style == "indented":
        text = "".join("  " + ln + "\n" for ln in text.splitlines())
    elif style == "tabs":
        text = text.replace("v ", "v\t").replace("f ", "f\t")
    (tmp_path / "c.obj").write_text(text)
    _check_cube_mesh(tmp_path / "c.obj")


def test_a_polygon_closing_its_loop_on_its_first_vertex_reads(tmp_path):
    """`4 0 1 2 0` over 3 vertices repeats the first corner to close the loop: legal, as before."""
    (tmp_path / "loop.off").write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n4 0 1 2 0\n")
    v, f = io.read_mesh(tmp_path / "loop.off")
    assert len(v) == 3 and f.tolist() == [[0, 1, 2], [0, 2, 0]]
    (tmp_path / "bad.off").write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n5 0 1 2 0 1\n")
    with pytest.raises(InputFileError, match="5 corners, more than the 3 vertices"):
        io.read_mesh(tmp_path / "bad.off")


def _stl_triangles():
    tris = io._fan(CUBE_QUADS)
    return CUBE_V[tris]


def test_stl_ascii_and_binary(tmp_path):
    tri = _stl_triangles()
    text = "solid cube\n"
    for t in tri:
        text += "  facet normal 0 0 0\n    outer loop\n"
        text += "".join(f"      vertex {x:e} {y:e} {z:e}\n" for x, y, z in t)
        text += "    endloop\n  endfacet\n"
    (tmp_path / "a.stl").write_text(text + "endsolid cube\n")
    rec = np.zeros(len(tri), dtype=[("n", "<f4", (3,)), ("v", "<f4", (3, 3)), ("a", "<u2")])
    rec["v"] = tri
    # A binary STL whose 80-byte header starts with "solid", as some exporters write.
    (tmp_path / "b.stl").write_bytes(
        b"solid but binary".ljust(80) + struct.pack("<I", len(tri)) + rec.tobytes()
    )
    for name in ("a.stl", "b.stl"):
        v, f = io.read_mesh(tmp_path / name)
        np.testing.assert_allclose(v[f], tri, atol=1e-6)
        assert io._triangle_areas(v.astype(np.float64), f).sum() == pytest.approx(6.0)
    (tmp_path / "t.stl").write_bytes(b"\x00" * 80 + struct.pack("<I", 10) + rec.tobytes()[:120])
    assert_error(tmp_path / "t.stl", "truncated binary STL: header says 10 triangles, file holds 2")


def test_binary_stl_with_solid_header_and_trailing_bytes(tmp_path):
    dt = np.dtype([("normal", "<f4", (3,)), ("v", "<f4", (3, 3)), ("attr", "<u2")])
    tri = np.zeros(2, dtype=dt)
    tri["v"][0] = [[0, 0, 0], [1, 0, 0], [0, 1, 0]]
    tri["v"][1] = [[0, 0, 1], [1, 0, 1], [0, 1, 1]]
    header = b"solid exported by a CAD tool".ljust(80, b" ")
    data = header + np.uint32(2).tobytes() + tri.tobytes() + b"\x00" * 7
    (tmp_path / "b.stl").write_bytes(data)
    assert read_points(tmp_path / "b.stl").shape == (6, 3)


# ---------------------------------------------------------------------------------------------
# glTF / GLB, read without open3d
# ---------------------------------------------------------------------------------------------


CUBE_V32 = CUBE_V.astype(np.float32)  # glTF buffers hold float32
CUBE_T = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                   [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]], dtype=np.uint16)  # fmt: skip


def _area(v: np.ndarray, f: np.ndarray) -> float:
    a, b, c = (v[f[:, k]].astype(np.float64) for k in range(3))
    return float(0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1).sum())


def _gltf_doc(n_vertices: int, n_indices: int, nodes: list[dict]) -> dict:
    vbytes = n_vertices * 12
    return {
        "asset": {"version": "2.0"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": nodes,
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "indices": 1}]}],
        "buffers": [{"byteLength": vbytes + n_indices * 2}],
        "bufferViews": [{"buffer": 0, "byteOffset": 0, "byteLength": vbytes},
                        {"buffer": 0, "byteOffset": vbytes, "byteLength": n_indices * 2}],
        "accessors": [{"bufferView": 0, "componentType": 5126, "count": n_vertices, "type": "VEC3"},
                      {"bufferView": 1, "componentType": 5123, "count": n_indices, "type": "SCALAR"}],
    }  # fmt: skip


def _glb(path: Path, doc: dict, binary: bytes) -> None:
    js = json.dumps(doc).encode()
    js += b" " * (-len(js) % 4)
    binary += b"\x00" * (-len(binary) % 4)
    body = struct.pack("<II", len(js), 0x4E4F534A) + js + struct.pack("<II", len(binary), 0x004E4942) + binary
    path.write_bytes(b"glTF" + struct.pack("<II", 2, 12 + len(body)) + body)


def test_glb_with_node_transforms(tmp_path):
    # The cube twice: once as it is, once scaled by 2 and moved by +10 in x through a child node.
    nodes = [{"mesh": 0, "children": [1]}, {"mesh": 0, "translation": [10, 0, 0], "scale": [2, 2, 2]}]
    _glb(tmp_path / "two.glb", _gltf_doc(8, 36, nodes), CUBE_V32.tobytes() + CUBE_T.tobytes())
    v, f = io.read_mesh(tmp_path / "two.glb")
    assert v.shape == (16, 3) and f.shape == (24, 3)
    np.testing.assert_allclose(v[:8], CUBE_V)
    np.testing.assert_allclose(v[8:], CUBE_V * 2 + [10, 0, 0])
    assert _area(v, f) == pytest.approx(6.0 + 24.0)


def test_gltf_with_data_uri_matches_trimesh(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    import base64

    doc = _gltf_doc(8, 36, [{"mesh": 0}])
    doc["buffers"][0]["uri"] = "data:application/octet-stream;base64," + base64.b64encode(
        CUBE_V32.tobytes() + CUBE_T.tobytes()
    ).decode()
    (tmp_path / "cube.gltf").write_text(json.dumps(doc))
    v, f = io.read_mesh(tmp_path / "cube.gltf")
    ref = trimesh.load(tmp_path / "cube.gltf", force="mesh")
    assert len(f) == len(ref.faces) == 12
    assert _area(v, f) == pytest.approx(ref.area)


def test_gltf_lies_are_errors(tmp_path):
    doc = _gltf_doc(8, 36, [{"mesh": 0}])
    binary = CUBE_V32.tobytes() + CUBE_T.tobytes()
    lie = json.loads(json.dumps(doc))
    lie["accessors"][0]["count"] = 10**9
    _glb(tmp_path / "count.glb", lie, binary)
    assert "more than the limit" in error_of(tmp_path / "count.glb")
    lie = json.loads(json.dumps(doc))
    lie["accessors"][0]["count"] = 100
    _glb(tmp_path / "past.glb", lie, binary)
    assert "runs past the end of its bufferView" in error_of(tmp_path / "past.glb")
    lie = json.loads(json.dumps(doc))
    lie["nodes"] = [{"mesh": 0, "children": [0]}]
    _glb(tmp_path / "cycle.glb", lie, binary)
    assert "cycle" in error_of(tmp_path / "cycle.glb")
    lie = json.loads(json.dumps(doc))
    lie["buffers"][0]["uri"] = "../../etc/passwd"
    (tmp_path / "escape.gltf").write_text(json.dumps(lie))
    assert "outside the file's folder" in error_of(tmp_path / "escape.gltf")
    lie = json.loads(json.dumps(doc))
    lie["extensionsRequired"] = ["KHR_draco_mesh_compression"]
    _glb(tmp_path / "draco.glb", lie, binary)
    assert "KHR_draco_mesh_compression" in error_of(tmp_path / "draco.glb")
    _glb(tmp_path / "cut.glb", doc, binary)
    data = (tmp_path / "cut.glb").read_bytes()
    (tmp_path / "cut.glb").write_bytes(data[:-40])
    assert "truncated GLB" in error_of(tmp_path / "cut.glb")


def test_gltf_through_open3d(tmp_path):
    o3d = pytest.importorskip("open3d")
    mesh = o3d.geometry.TriangleMesh.create_box()
    assert o3d.io.write_triangle_mesh(str(tmp_path / "box.gltf"), mesh)
    v, f = io.read_mesh(tmp_path / "box.gltf")
    assert len(f) == 12
    assert io._triangle_areas(v.astype(np.float64), f).sum() == pytest.approx(6.0, rel=1e-5)
    (tmp_path / "bad.glb").write_bytes(b"glTF garbage")
    assert_error(tmp_path / "bad.glb", "GLB")


# ---------------------------------------------------------------------------------------------
# Every mesh format
# ---------------------------------------------------------------------------------------------


def test_mesh_without_faces_and_degenerate_mesh_fall_back_to_vertices(tmp_path):
    (tmp_path / "nf.obj").write_text("".join(f"v {x} {y} {z}\n" for x, y, z in PTS))
    np.testing.assert_allclose(io.load_raw(tmp_path / "nf.obj", 500, 0), PTS)
    # Faces whose corners are collinear have zero area.
    io.write_off(tmp_path / "deg.off", [[0, 0, 0], [1, 1, 1], [2, 2, 2]], [[0, 1, 2]])
    np.testing.assert_allclose(io.load_raw(tmp_path / "deg.off", 500, 0), [[0, 0, 0], [1, 1, 1], [2, 2, 2]])
    with pytest.raises(InputFileError, match="holds no faces"):
        io.read_mesh(tmp_path / "nf.obj")


def test_mesh_errors(tmp_path):
    (tmp_path / "a.off").write_text("NOT AN OFF\n")
    assert_error(tmp_path / "a.off", "not an OFF file")
    (tmp_path / "b.off").write_text("OFF\n4 1 0\n0 0 0\n1 0 0\n")
    assert_error(tmp_path / "b.off", "truncated OFF: header says 4 vertices, file holds 2")
    (tmp_path / "c.off").write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n")
    assert_error(tmp_path / "c.off", "face refers to a vertex that does not exist")
    (tmp_path / "d.obj").write_text("# nothing\n")
    assert_error(tmp_path / "d.obj", "no points")


def test_huge_mesh_coordinates_sample_without_overflow(tmp_path):
    v = np.array([[0, 0, 0], [1e200, 0, 0], [0, 1e200, 0], [1e200, 1e200, 1e200]], dtype=np.float64)
    (tmp_path / "m.off").write_text("OFF\n4 2 0\n" + "\n".join(" ".join(f"{x:.17g}" for x in r) for r in v) + "\n3 0 1 2\n3 0 1 3\n")
    out = read_cloud(tmp_path / "m.off", n_points=128)
    assert out.shape == (128, 3) and np.isfinite(out).all()
    assert np.abs(np.linalg.norm(out, axis=1).max() - 1) < 1e-5


@pytest.mark.parametrize("fmt", ["off", "ascii_ply", "binary_ply", "obj"])
def test_max_points_bounds_the_triangles_of_every_mesh_format(tmp_path, fmt):
    """Many polygons each under the corner limit: their fans together are bounded by max_points."""
    nv, nf, k = 50, 40, 50  # 40 faces of 50 corners: 1920 triangles
    verts = np.random.default_rng(0).random((nv, 3)).astype("<f4")
    face = list(range(k))
    if fmt == "off":
        text = f"OFF\n{nv} {nf} 0\n" + "".join("{:f} {:f} {:f}\n".format(*v) for v in verts)
        text += "".join(f"{k} " + " ".join(map(str, face)) + "\n" for _ in range(nf))
        path = tmp_path / "m.off"
        path.write_text(text)
    elif fmt == "obj":
        text = "".join("v {:f} {:f} {:f}\n".format(*v) for v in verts)
        text += "".join("f " + " ".join(str(i + 1) for i in face) + "\n" for _ in range(nf))
        path = tmp_path / "m.obj"
        path.write_text(text)
    else:
        ascii_ = fmt == "ascii_ply"
        head = (f"ply\nformat {'ascii' if ascii_ else 'binary_little_endian'} 1.0\nelement vertex {nv}\n"
                f"property float x\nproperty float y\nproperty float z\nelement face {nf}\n"
                "property list uchar int vertex_indices\nend_header\n")
        if ascii_:
            body = ("".join("{:f} {:f} {:f}\n".format(*v) for v in verts)
                    + "".join(f"{k} " + " ".join(map(str, face)) + "\n" for _ in range(nf))).encode()
        else:
            body = verts.tobytes() + (struct.pack("<B", k) + np.array(face, "<i4").tobytes()) * nf
        path = tmp_path / "m.ply"
        path.write_bytes(head.encode() + body)
    assert len(io.read_mesh(path)[1]) == nf * (k - 2)
    with pytest.raises(InputFileError, match="more than 1000 triangles, the limit"):
        io.read_mesh(path, max_points=1000)
