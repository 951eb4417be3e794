"""clip2point.io: every format round-trips, sampling and normalisation, clear errors."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest

from clip2point import io
from clip2point.errors import InputFileError, UsageError

RNG = np.random.default_rng(123)
PTS = RNG.normal(size=(50, 3)).round(4)  # 4 decimals: exact in text formats


def raw(path: Path) -> np.ndarray:
    return io.read_points(path).astype(np.float64)


def assert_error(path: Path, *fragments: str, **kwargs) -> InputFileError:
    with pytest.raises(InputFileError) as info:
        io.read_cloud(path, **kwargs)
    msg = str(info.value)
    assert str(path) in msg
    for frag in fragments:
        assert frag in msg, msg
    return info.value


# ---------------------------------------------------------------------------------------------
# PLY
# ---------------------------------------------------------------------------------------------


def test_ply_ascii_with_extra_properties(tmp_path):
    header = (
        "ply\nformat ascii 1.0\ncomment scanner export\nelement vertex 50\nproperty float x\nproperty float y\n"
        "property float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\nproperty float intensity\n"
        "end_header\n"
    )
    rows = "".join(f"{x} {y} {z} 10 20 30 0.5\n" for x, y, z in PTS)
    (tmp_path / "a.ply").write_text(header + rows)
    np.testing.assert_allclose(raw(tmp_path / "a.ply"), PTS, atol=1e-6)


@pytest.mark.parametrize("order", ["<", ">"])
def test_ply_binary_hand_written(tmp_path, order):
    fmt = "binary_little_endian" if order == "<" else "binary_big_endian"
    # Mixed types and both spellings of type names; xyz not first and in double precision.
    dt = np.dtype([("intensity", order + "f4"), ("x", order + "f8"), ("y", order + "f8"), ("z", order + "f8"),
                   ("red", "u1"), ("green", "u1"), ("blue", "u1"), ("label", order + "i4")])  # fmt: skip
    rec = np.zeros(len(PTS), dtype=dt)
    rec["x"], rec["y"], rec["z"] = PTS.T
    rec["intensity"], rec["red"], rec["label"] = 0.7, 200, -3
    header = (
        f"ply\nformat {fmt} 1.0\nelement vertex {len(PTS)}\nproperty float32 intensity\nproperty double x\n"
        "property float64 y\nproperty double z\nproperty uint8 red\nproperty uchar green\nproperty uchar blue\n"
        "property int label\nend_header\n"
    )
    (tmp_path / "b.ply").write_bytes(header.encode() + rec.tobytes())
    np.testing.assert_array_equal(raw(tmp_path / "b.ply"), PTS.astype(np.float32))


@pytest.mark.parametrize("fmt", ["ascii", "binary_little_endian", "binary_big_endian"])
def test_write_ply_round_trip(tmp_path, fmt):
    props = {
        "intensity": np.linspace(0, 1, len(PTS)).astype(np.float32),
        "red": np.arange(len(PTS), dtype=np.uint8),
    }
    io.write_ply(tmp_path / "c.ply", PTS, props, fmt=fmt)
    np.testing.assert_allclose(raw(tmp_path / "c.ply"), PTS, atol=1e-6)


@pytest.mark.parametrize("fmt", ["ascii", "binary_little_endian", "binary_big_endian"])
def test_ply_with_faces_is_a_mesh(tmp_path, fmt):
    # A unit square in the plane z = 2, as one quad (fan-triangulated) in a face list after the vertices.
    verts = np.array([[0, 0, 2], [1, 0, 2], [1, 1, 2], [0, 1, 2]], dtype=np.float32)
    if fmt == "ascii":
        body = "".join(f"{x} {y} {z}\n" for x, y, z in verts) + "4 0 1 2 3\n"
        data = body.encode()
    else:
        o = "<" if fmt == "binary_little_endian" else ">"
        data = verts.astype(o + "f4").tobytes() + struct.pack(o + "B4i", 4, 0, 1, 2, 3)
    header = (
        f"ply\nformat {fmt} 1.0\nelement vertex 4\nproperty float x\nproperty float y\nproperty float z\n"
        "element face 1\nproperty list uchar int vertex_indices\nend_header\n"
    )
    (tmp_path / "m.ply").write_bytes(header.encode() + data)
    v, f = io.read_mesh(tmp_path / "m.ply")
    np.testing.assert_array_equal(v, verts)
    np.testing.assert_array_equal(f, [[0, 1, 2], [0, 2, 3]])
    # Surface samples, not the 4 vertices: 200 distinct points on the square.
    pts = io.load_raw(tmp_path / "m.ply", 200, 0)
    assert pts.shape == (200, 3)
    np.testing.assert_allclose(pts[:, 2], 2.0)
    assert pts[:, :2].min() >= 0 and pts[:, :2].max() <= 1


def test_ply_binary_mixed_face_lengths_and_extra_face_props(tmp_path):
    verts = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1]], dtype="<f4")
    faces = struct.pack("<B4iB", 4, 0, 1, 2, 3, 7) + struct.pack("<B3iB", 3, 0, 1, 4, 9)
    header = (
        "ply\nformat binary_little_endian 1.0\nelement vertex 5\nproperty float x\nproperty float y\nproperty float z\n"
        "element face 2\nproperty list uchar int vertex_indices\nproperty uchar flags\nend_header\n"
    )
    (tmp_path / "m.ply").write_bytes(header.encode() + verts.tobytes() + faces)
    _, f = io.read_mesh(tmp_path / "m.ply")
    np.testing.assert_array_equal(f, [[0, 1, 2], [0, 2, 3], [0, 1, 4]])


def test_ply_errors(tmp_path):
    (tmp_path / "np.ply").write_text("hello\n")
    assert_error(tmp_path / "np.ply", "not a PLY file")
    (tmp_path / "noxyz.ply").write_text(
        "ply\nformat ascii 1.0\nelement vertex 1\nproperty float a\nend_header\n1\n"
    )
    assert_error(tmp_path / "noxyz.ply", "PLY has no x/y/z properties")
    header = "ply\nformat binary_little_endian 1.0\nelement vertex 1000\nproperty float x\nproperty float y\nproperty float z\nend_header\n"
    (tmp_path / "trunc.ply").write_bytes(header.encode() + np.zeros((12, 3), "<f4").tobytes() + b"\x00\x01")
    assert_error(tmp_path / "trunc.ply", "truncated binary PLY: header says 1000 vertices, file holds 12")
    (tmp_path / "list.ply").write_text(
        "ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nproperty float z\n"
        "property list uchar float extra\nend_header\n1 2 3 1 5\n"
    )
    assert_error(tmp_path / "list.ply", "list property 'extra'")
    (tmp_path / "zero.ply").write_text(
        "ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\nproperty float z\nend_header\n"
    )
    assert_error(tmp_path / "zero.ply", "no points")


# ---------------------------------------------------------------------------------------------
# PCD
# ---------------------------------------------------------------------------------------------


def _pcd_header(fields, sizes, types, counts, n, data):
    return (
        "# .PCD v0.7\nVERSION 0.7\n"
        f"FIELDS {' '.join(fields)}\nSIZE {' '.join(map(str, sizes))}\nTYPE {' '.join(types)}\n"
        f"COUNT {' '.join(map(str, counts))}\nWIDTH {n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\nDATA {data}\n"
    )


def test_pcd_ascii(tmp_path):
    header = _pcd_header(
        ["intensity", "x", "y", "z", "normal"], [4, 4, 4, 4, 4], "FFFFF", [1, 1, 1, 1, 3], len(PTS), "ascii"
    )
    rows = "".join(f"0.5 {x} {y} {z} 0 0 1\n" for x, y, z in PTS)
    (tmp_path / "a.pcd").write_text(header + rows)
    np.testing.assert_allclose(raw(tmp_path / "a.pcd"), PTS, atol=1e-6)


def test_pcd_binary_with_rgb(tmp_path):
    header = _pcd_header(
        ["x", "y", "z", "rgb", "label"], [4, 4, 4, 4, 2], "FFFUU", [1, 1, 1, 1, 1], len(PTS), "binary"
    )
    rec = np.zeros(
        len(PTS), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4"), ("label", "<u2")]
    )
    rec["x"], rec["y"], rec["z"] = PTS.T
    rec["rgb"] = 0xFF8800
    (tmp_path / "b.pcd").write_bytes(header.encode() + rec.tobytes())
    np.testing.assert_array_equal(raw(tmp_path / "b.pcd"), PTS.astype(np.float32))


def test_pcd_binary_compressed_through_open3d(tmp_path):
    o3d = pytest.importorskip("open3d")
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(PTS))
    assert o3d.io.write_point_cloud(str(tmp_path / "c.pcd"), cloud, compressed=True)
    assert "binary_compressed" in (tmp_path / "c.pcd").read_bytes()[:400].decode("ascii", "replace")
    np.testing.assert_allclose(raw(tmp_path / "c.pcd"), PTS, atol=1e-5)


def test_pcd_errors(tmp_path):
    header = _pcd_header(["x", "y", "z"], [4, 4, 4], "FFF", [1, 1, 1], 100, "binary")
    (tmp_path / "t.pcd").write_bytes(header.encode() + np.zeros((7, 3), "<f4").tobytes())
    assert_error(tmp_path / "t.pcd", "truncated binary PCD: header says 100 points, file holds 7")
    header = _pcd_header(["a", "b", "c"], [4, 4, 4], "FFF", [1, 1, 1], 1, "ascii")
    (tmp_path / "n.pcd").write_text(header + "1 2 3\n")
    assert_error(tmp_path / "n.pcd", "PCD has no x/y/z fields")


# ---------------------------------------------------------------------------------------------
# Text and numpy
# ---------------------------------------------------------------------------------------------


def test_xyz_with_header_and_commas(tmp_path):
    rows = "".join(f"{x},{y},{z},0.1,0.2,0.3\n" for x, y, z in PTS)
    (tmp_path / "a.xyz").write_text("x,y,z,nx,ny,nz\n# a comment\n\n" + rows)
    np.testing.assert_allclose(raw(tmp_path / "a.xyz"), PTS, atol=1e-6)


def test_modelnet_normal_txt_and_pts_with_count(tmp_path):
    (tmp_path / "m.txt").write_text("".join(f"{x:.6f},{y:.6f},{z:.6f},0.0,0.0,1.0\n" for x, y, z in PTS))
    np.testing.assert_allclose(raw(tmp_path / "m.txt"), PTS, atol=1e-6)
    (tmp_path / "s.pts").write_text(
        f"{len(PTS)}\n" + "".join(f"{x} {y} {z} 128 255 0 0\n" for x, y, z in PTS)
    )
    np.testing.assert_allclose(raw(tmp_path / "s.pts"), PTS, atol=1e-6)


def test_text_errors(tmp_path):
    (tmp_path / "two.xyz").write_text("1 2\n3 4\n")
    assert_error(tmp_path / "two.xyz", "need at least x y z")
    (tmp_path / "bad.xyz").write_text("1 2 3\n4 five 6\n")
    assert_error(tmp_path / "bad.xyz", "cannot parse numbers")
    (tmp_path / "hdr.xyz").write_text("x y z\n")
    assert_error(tmp_path / "hdr.xyz", "no points")


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
def test_npy(tmp_path, dtype):
    arr = np.concatenate([PTS * 100, np.ones((len(PTS), 2))], axis=1).astype(dtype)
    np.save(tmp_path / "a.npy", arr)
    np.testing.assert_allclose(raw(tmp_path / "a.npy"), arr[:, :3].astype(np.float64), rtol=1e-6)


def test_npz_key_rules(tmp_path):
    np.savez(tmp_path / "p.npz", labels=np.zeros(3), points=PTS)
    np.testing.assert_allclose(raw(tmp_path / "p.npz"), PTS, atol=1e-6)
    np.savez(tmp_path / "x.npz", normals=PTS * 0, xyz=PTS)
    np.testing.assert_allclose(raw(tmp_path / "x.npz"), PTS, atol=1e-6)
    np.savez_compressed(tmp_path / "s.npz", whatever=PTS)
    np.testing.assert_allclose(raw(tmp_path / "s.npz"), PTS, atol=1e-6)
    np.savez(tmp_path / "m.npz", a=PTS, b=PTS)
    assert_error(tmp_path / "m.npz", ".npz has several arrays and none is named points or xyz: a, b")


def test_npy_errors(tmp_path):
    np.save(tmp_path / "v.npy", np.zeros(5))
    assert_error(tmp_path / "v.npy", ".npy array has shape (5,)", "need N x 3 or more columns")
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert_error(tmp_path / "o.npy", "not a readable .npy array")
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    assert_error(tmp_path / "junk.npy", "not a readable .npy array")


# ---------------------------------------------------------------------------------------------
# Meshes
# ---------------------------------------------------------------------------------------------

CUBE_V = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], dtype=np.float64)
CUBE_QUADS = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]


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


def test_gltf_through_open3d(tmp_path):
    o3d = pytest.importorskip("open3d")
    mesh = o3d.geometry.TriangleMesh.create_box()
    assert o3d.io.write_triangle_mesh(str(tmp_path / "box.gltf"), mesh)
    v, f = io.read_mesh(tmp_path / "box.gltf")
    assert len(f) == 12
    assert io._triangle_areas(v.astype(np.float64), f).sum() == pytest.approx(6.0, rel=1e-5)
    (tmp_path / "bad.glb").write_bytes(b"glTF garbage")
    assert_error(tmp_path / "bad.glb", "GLB")


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


# ---------------------------------------------------------------------------------------------
# Sampling, normalisation, up axis
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def big_npy(tmp_path) -> Path:
    np.save(tmp_path / "big.npy", np.random.default_rng(0).uniform(-1, 1, (3000, 3)).astype(np.float32))
    return tmp_path / "big.npy"


@pytest.mark.parametrize("sampling", ["random", "fps"])
def test_n_points_honoured_and_deterministic(big_npy, sampling):
    a = io.read_cloud(big_npy, n_points=256, sampling=sampling, seed=1)
    b = io.read_cloud(big_npy, n_points=256, sampling=sampling, seed=1)
    c = io.read_cloud(big_npy, n_points=256, sampling=sampling, seed=2)
    assert a.shape == (256, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len(np.unique(a, axis=0)) == 256  # without replacement


def test_fewer_points_kept_as_they_are(big_npy):
    assert io.read_cloud(big_npy, n_points=5000).shape == (3000, 3)
    assert io.read_cloud(big_npy, n_points=5000, sampling="fps").shape == (3000, 3)


def _min_pairwise(p: np.ndarray) -> float:
    d = np.linalg.norm(p[:, None] - p[None], axis=-1)
    return float(d[~np.eye(len(p), dtype=bool)].min())


def test_fps_spreads_better_than_random(big_npy):
    fps = io.read_cloud(big_npy, n_points=200, sampling="fps")
    rnd = io.read_cloud(big_npy, n_points=200, sampling="random")
    assert _min_pairwise(fps) > 3 * _min_pairwise(rnd)


def test_mesh_sampling_counts(tmp_path):
    io.write_off(tmp_path / "c.off", CUBE_V, io._fan(CUBE_QUADS))
    assert io.read_cloud(tmp_path / "c.off", n_points=300).shape == (300, 3)
    assert io.read_cloud(tmp_path / "c.off", n_points=300, sampling="fps").shape == (300, 3)
    # Meshes are sampled, so any count is reachable even from 8 vertices.
    assert len(np.unique(io.read_cloud(tmp_path / "c.off", n_points=300), axis=0)) == 300


def test_area_weighting():
    v = np.array(
        [[0, 0, 0], [10, 0, 0], [0, 10, 0], [20, 20, 0], [20.01, 20, 0], [20, 20.01, 0]], dtype=np.float64
    )
    f = np.array([[0, 1, 2], [3, 4, 5]])
    pts = io.sample_surface(v, f, 20000, np.random.default_rng(0))
    on_big = (pts[:, 0] + pts[:, 1] <= 10 + 1e-4).mean()
    assert on_big > 0.999  # the tiny triangle holds 1e-6 of the area
    assert pts[:, 0].mean() == pytest.approx(10 / 3, abs=0.05)  # uniform on the big one: centroid


def test_normalisation():
    p = io.normalize_unit_sphere(np.random.default_rng(0).normal(5.0, 3.0, (500, 3)))
    np.testing.assert_allclose(p.mean(axis=0), 0, atol=1e-6)
    assert np.linalg.norm(p, axis=1).max() == pytest.approx(1.0, abs=1e-6)


def test_read_cloud_is_normalised(big_npy):
    p = io.read_cloud(big_npy, n_points=512)
    np.testing.assert_allclose(p.mean(axis=0), 0, atol=1e-6)
    assert np.linalg.norm(p, axis=1).max() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(("up", "expected"), [("z", [0, 1, 0]), ("y", [0, 0, 1])])
def test_up_axis(tmp_path, up, expected):
    octa = (
        np.array([[0, 0, 1], [0, 0, -1], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]], dtype=np.float32) * 3
    )
    np.save(tmp_path / "o.npy", octa + 7)
    p = io.read_cloud(tmp_path / "o.npy", n_points=6, up=up)
    np.testing.assert_allclose(p[0], expected, atol=1e-6)


def test_nan_rows_dropped(tmp_path):
    arr = PTS.copy()
    arr[::5] = np.nan
    arr[1, 2] = np.inf
    np.save(tmp_path / "n.npy", arr)
    assert io.load_raw(tmp_path / "n.npy", 0).shape == (len(PTS) - 11, 3)
    assert np.isfinite(io.read_cloud(tmp_path / "n.npy", n_points=1000)).all()


def test_bad_sampling_options(big_npy):
    with pytest.raises(UsageError):
        io.read_cloud(big_npy, sampling="grid")
    with pytest.raises(UsageError):
        io.read_cloud(big_npy, n_points=0)


# ---------------------------------------------------------------------------------------------
# General errors
# ---------------------------------------------------------------------------------------------


def test_general_errors(tmp_path):
    (tmp_path / "a.foo").write_text("1 2 3\n")
    assert_error(tmp_path / "a.foo", "unknown extension '.foo'", "supported:", ".ply")
    (tmp_path / "e.ply").write_bytes(b"")
    assert_error(tmp_path / "e.ply", "file is empty")
    np.save(tmp_path / "nan.npy", np.full((4, 3), np.nan))
    assert_error(tmp_path / "nan.npy", "all coordinates are NaN or Inf")
    np.save(tmp_path / "same.npy", np.ones((10, 3)))
    assert_error(tmp_path / "same.npy", "all points coincide (zero extent)")
    assert_error(tmp_path / "missing.npy", "no such file")
    (tmp_path / "dir.ply").mkdir()
    assert_error(tmp_path / "dir.ply", "is a folder")
    np.save(tmp_path / "empty.npy", np.zeros((0, 3)))
    assert_error(tmp_path / "empty.npy", "no points")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads everything")
def test_permission_denied(tmp_path):
    np.save(tmp_path / "p.npy", PTS)
    (tmp_path / "p.npy").chmod(0)
    assert_error(tmp_path / "p.npy", "permission denied")


def test_io_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, clip2point.io; print('torch' in sys.modules, 'open3d' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_example_scans_read(tmp_path):
    scans = Path(__file__).resolve().parents[2] / "examples" / "scans"
    files = sorted(f for f in scans.iterdir() if f.suffix.lower() in io.SUPPORTED_EXTENSIONS)
    assert len(files) >= 8
    for f in files:
        p = io.read_cloud(f, n_points=512)
        assert p.shape == (512, 3) and np.isfinite(p).all()


# ---------------------------------------------------------------------------------------------
# Farthest point sampling: the blocked loop picks exactly what the plain loop picks
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gaussian", "grid_with_ties", "duplicates", "far_offset", "flat"])
def test_blocked_fps_is_bit_identical_to_the_plain_loop(kind):
    from clip2point.io._fps import _fps_reference, fps_indices

    rng = np.random.default_rng(5)
    n = 12_000
    if kind == "gaussian":
        p = rng.normal(size=(n, 3)) * [3, 1, 0.2]
    elif kind == "grid_with_ties":
        p = rng.integers(0, 12, size=(n, 3)).astype(np.float64)  # many equal distances
    elif kind == "duplicates":
        p = np.repeat(rng.normal(size=(n // 4, 3)), 4, axis=0)
    elif kind == "far_offset":
        p = rng.normal(size=(n, 3)) + [5e6, -3e5, 120.0]
    else:
        p = np.c_[rng.random((n, 2)), np.zeros(n)]
    cols = np.ascontiguousarray((p - p.mean(axis=0)).T.astype(np.float32))
    for start in (0, 777):
        np.testing.assert_array_equal(fps_indices(cols, 700, start), _fps_reference(cols, 700, start))


def test_fps_torch_path_matches_numpy():
    pytest.importorskip("torch")
    p = np.random.default_rng(2).normal(size=(6000, 3))
    a = io.farthest_point_sample(p, 200, 3)
    b = io.farthest_point_sample(p, 200, 3, backend="torch", device="cpu")
    np.testing.assert_array_equal(a, b)


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
