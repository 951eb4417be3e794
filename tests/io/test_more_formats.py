"""Formats that scanners and driving datasets produce (LAS/LAZ, KITTI .bin, E57), glTF read without
open3d, and PCL's compressed PCD decoded here: files made on the fly, with the libraries themselves
where there is one (laspy, pye57, trimesh), and the same bad-input rules as every other reader."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from clip2point import io
from clip2point.errors import InputFileError, OptionError
from clip2point.io._lzf import lzf_decompress

RNG = np.random.default_rng(7)
PTS = RNG.normal(size=(500, 3)) * [3.0, 1.0, 0.5] + [10.0, -2.0, 1.0]


def error_of(path: Path, **kwargs) -> str:
    with pytest.raises(InputFileError) as info:
        io.read_points(path, **kwargs)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg
    return msg


# ---------------------------------------------------------------------------------------------
# LAS / LAZ (laspy writes them)
# ---------------------------------------------------------------------------------------------


def _las(path: Path, pts: np.ndarray, fmt: int = 3):
    laspy = pytest.importorskip("laspy")
    header = laspy.LasHeader(point_format=fmt, version="1.2")
    header.scales = [0.001, 0.001, 0.001]
    header.offsets = [0.0, 0.0, 0.0]
    las = laspy.LasData(header)
    las.x, las.y, las.z = pts[:, 0], pts[:, 1], pts[:, 2]
    las.write(path)


@pytest.mark.parametrize("name", ["scan.las", "scan.laz"])
def test_las_and_laz_written_by_laspy(tmp_path, name):
    if name.endswith(".laz"):
        laspy = pytest.importorskip("laspy")
        if not laspy.LazBackend.detect_available():
            pytest.skip("no LAZ backend (lazrs) installed")
    _las(tmp_path / name, PTS)
    got = io.read_points(tmp_path / name)
    np.testing.assert_allclose(got, PTS.astype(np.float32), atol=1e-3)
    cloud = io.read_cloud(tmp_path / name, n_points=128)
    assert cloud.shape == (128, 3) and np.isfinite(cloud).all()


def test_las_header_lies_and_truncation(tmp_path):
    _las(tmp_path / "a.las", PTS)
    data = bytearray((tmp_path / "a.las").read_bytes())
    (tmp_path / "cut.las").write_bytes(bytes(data[: len(data) - 600]))
    assert "truncated LAS" in error_of(tmp_path / "cut.las")
    assert "max_points" in error_of(tmp_path / "a.las", max_points=100)
    (tmp_path / "junk.las").write_bytes(b"not a las file at all" * 10)
    assert "not a LAS/LAZ file" in error_of(tmp_path / "junk.las")


# ---------------------------------------------------------------------------------------------
# KITTI / nuScenes .bin
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("columns", [4, 5])
def test_kitti_and_nuscenes_bin(tmp_path, columns):
    rows = np.concatenate([PTS, RNG.random((len(PTS), columns - 3))], axis=1).astype(np.float32)
    rows.tofile(tmp_path / "000001.bin")
    got = io.read_points(tmp_path / "000001.bin", bin_columns=columns)
    np.testing.assert_array_equal(got, rows[:, :3])
    assert io.read_cloud(tmp_path / "000001.bin", n_points=64, bin_columns=columns).shape == (64, 3)


def test_bin_size_must_be_whole_rows(tmp_path):
    np.zeros(4 * 10 + 1, dtype=np.float32).tofile(tmp_path / "odd.bin")
    msg = error_of(tmp_path / "odd.bin")
    assert "not a whole number of 4-column float32 rows" in msg and "bin_columns" in msg
    np.zeros((10, 4), dtype=np.float32).tofile(tmp_path / "ten.bin")
    assert "max_points" in error_of(tmp_path / "ten.bin", max_points=5)
    with pytest.raises(OptionError, match="bin_columns must be between 3 and 64"):
        io.read_points(tmp_path / "ten.bin", bin_columns=2)
    with pytest.raises(OptionError, match="max_points must be"):
        io.read_points(tmp_path / "ten.bin", max_points=0)


# ---------------------------------------------------------------------------------------------
# E57 (pye57 writes it)
# ---------------------------------------------------------------------------------------------


def test_e57_written_by_pye57(tmp_path):
    pye57 = pytest.importorskip("pye57")
    e57 = pye57.E57(str(tmp_path / "scan.e57"), mode="w")
    e57.write_scan_raw({"cartesianX": PTS[:, 0], "cartesianY": PTS[:, 1], "cartesianZ": PTS[:, 2]})
    e57.close()
    np.testing.assert_allclose(io.read_points(tmp_path / "scan.e57"), PTS.astype(np.float32), rtol=1e-6)
    assert "max_points" in error_of(tmp_path / "scan.e57", max_points=100)
    data = (tmp_path / "scan.e57").read_bytes()
    (tmp_path / "cut.e57").write_bytes(data[:-1024])
    assert "E57 header says the file has" in error_of(tmp_path / "cut.e57")
    (tmp_path / "junk.e57").write_bytes(b"ASTM-E5" + b"\x00" * 2000)
    assert "not an E57 file" in error_of(tmp_path / "junk.e57")


# ---------------------------------------------------------------------------------------------
# glTF / GLB, read without open3d
# ---------------------------------------------------------------------------------------------

CUBE_V = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], dtype=np.float32)
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
    _glb(tmp_path / "two.glb", _gltf_doc(8, 36, nodes), CUBE_V.tobytes() + CUBE_T.tobytes())
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
        CUBE_V.tobytes() + CUBE_T.tobytes()
    ).decode()
    (tmp_path / "cube.gltf").write_text(json.dumps(doc))
    v, f = io.read_mesh(tmp_path / "cube.gltf")
    ref = trimesh.load(tmp_path / "cube.gltf", force="mesh")
    assert len(f) == len(ref.faces) == 12
    assert _area(v, f) == pytest.approx(ref.area)


def test_gltf_lies_are_errors(tmp_path):
    doc = _gltf_doc(8, 36, [{"mesh": 0}])
    binary = CUBE_V.tobytes() + CUBE_T.tobytes()
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


# ---------------------------------------------------------------------------------------------
# binary_compressed PCD: LZF decoded here
# ---------------------------------------------------------------------------------------------


def lzf_compress(data: bytes) -> bytes:
    """A small greedy LZF compressor (literal runs and back-references), for tests."""
    out, lit, i, table = bytearray(), bytearray(), 0, {}

    def flush():
        for k in range(0, len(lit), 32):
            part = lit[k : k + 32]
            out.append(len(part) - 1)
            out.extend(part)
        lit.clear()

    while i < len(data):
        key = data[i : i + 3]
        ref = table.get(key)
        table[key] = i
        if ref is not None and len(key) == 3 and i - ref - 1 < 8192:
            length = 3
            while i + length < len(data) and length < 264 and data[ref + length] == data[i + length]:
                length += 1
            flush()
            off, n = i - ref - 1, length - 2
            if n < 7:
                out += bytes([(n << 5) | (off >> 8), off & 0xFF])
            else:
                out += bytes([(7 << 5) | (off >> 8), n - 7, off & 0xFF])
            i += length
        else:
            lit.append(data[i])
            i += 1
    flush()
    return bytes(out)


def _compressed_pcd(path: Path, pts: np.ndarray, declared: int | None = None, sizes=None) -> None:
    n = len(pts)
    soa = b"".join(np.ascontiguousarray(pts[:, k], dtype="<f4").tobytes() for k in range(3))
    payload = lzf_compress(soa)
    csize, usize = sizes or (len(payload), len(soa))
    header = (
        "VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\n"
        f"WIDTH {declared or n}\nHEIGHT 1\nPOINTS {declared or n}\nDATA binary_compressed\n"
    )
    path.write_bytes(header.encode() + struct.pack("<II", csize, usize) + payload)


def test_lzf_round_trip_with_long_and_overlapping_references():
    data = b"abcabcabcabc" * 50 + bytes(range(256)) * 3 + b"\x00" * 1000
    assert bytes(lzf_decompress(lzf_compress(data), len(data))) == data


def test_compressed_pcd_decoded_here(tmp_path):
    grid = np.round(PTS, 1)  # repeated values: back-references
    _compressed_pcd(tmp_path / "c.pcd", grid)
    np.testing.assert_array_equal(io.read_points(tmp_path / "c.pcd"), grid.astype(np.float32))


def test_compressed_pcd_lies_are_errors_not_heap_reads(tmp_path):
    # A small file whose header declares far more points than its data holds.
    _compressed_pcd(tmp_path / "big.pcd", PTS[:4], declared=100_000, sizes=None)
    assert "uncompressed bytes" in error_of(tmp_path / "big.pcd")
    _compressed_pcd(tmp_path / "huge.pcd", PTS[:4], declared=100_000_000)
    assert "max_points" in error_of(tmp_path / "huge.pcd")
    n = 4
    _compressed_pcd(tmp_path / "usize.pcd", PTS[:n])
    raw = bytearray((tmp_path / "usize.pcd").read_bytes())
    at = raw.index(b"binary_compressed\n") + len(b"binary_compressed\n")
    raw[at : at + 4] = struct.pack("<I", 10_000)  # compressed size larger than the file
    (tmp_path / "csize.pcd").write_bytes(bytes(raw))
    assert "truncated binary_compressed PCD" in error_of(tmp_path / "csize.pcd")
    for bad, what in [(b"\x05ab", "literal run runs past"), (b"\x20\x10", "points before the start"),
                      (b"\x1f" + b"a" * 32 + b"\xe0\xff\x00", "more bytes than the declared")]:  # fmt: skip
        header = "FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nPOINTS 4\nDATA binary_compressed\n"
        (tmp_path / "lzf.pcd").write_bytes(header.encode() + struct.pack("<II", len(bad), 48) + bad)
        assert what in error_of(tmp_path / "lzf.pcd")


def test_compressed_pcd_written_by_open3d(tmp_path):
    o3d = pytest.importorskip("open3d")
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(PTS))
    assert o3d.io.write_point_cloud(str(tmp_path / "o.pcd"), cloud, compressed=True)
    np.testing.assert_allclose(io.read_points(tmp_path / "o.pcd"), PTS, atol=1e-5)


def test_bin_files_that_are_checkpoints_or_archives_are_refused_not_read_as_noise(tmp_path):
    """A folder scan meets pytorch_model.bin and friends: any file of a whole number of rows would
    otherwise read as a cloud of noise and get a label."""
    import gzip
    import pickle

    import torch
    from safetensors.torch import save_file

    state = {"w": torch.randn(64, 16)}
    torch.save(state, tmp_path / "zip.bin")
    torch.save(state, tmp_path / "legacy.bin", _use_new_zipfile_serialization=False)
    save_file(state, str(tmp_path / "safetensors.bin"))
    (tmp_path / "gzip.bin").write_bytes(gzip.compress(np.random.default_rng(0).random(1600).astype("<f4").tobytes()))
    (tmp_path / "pickle4.bin").write_bytes(pickle.dumps(list(range(1000)), protocol=4))
    for path in sorted(tmp_path.glob("*.bin")):
        path.write_bytes(path.read_bytes().ljust(-(-path.stat().st_size // 16) * 16, b"\0"))  # whole rows
        with pytest.raises(InputFileError, match="not a raw float32 scan"):
            io.read_cloud(path)
    # a real scan whose first x is small but plausible, and one at the origin, still read
    rows = np.random.default_rng(1).normal(size=(2000, 4)).astype("<f4")
    rows[0, 0] = 1e-3
    rows.tofile(tmp_path / "scan.bin")
    assert io.read_cloud(tmp_path / "scan.bin").shape == (1024, 3)
    rows[0] = 0.0
    rows.tofile(tmp_path / "scan.bin")
    assert io.read_cloud(tmp_path / "scan.bin").shape == (1024, 3)


def test_bin_pickles_of_protocol_2_and_3_are_refused(tmp_path):
    """pickle.dump's default protocol until Python 3.8: PROTO at the start, STOP at the end."""
    import pickle

    for protocol in (2, 3):
        obj = {"w": list(range(3000)), "pad": ""}
        data = pickle.dumps(obj, protocol=protocol)
        obj["pad"] = "x" * (-len(data) % 16)  # whole 16-byte rows, so only the signature can tell
        data = pickle.dumps(obj, protocol=protocol)
        assert len(data) % 16 == 0 and data.endswith(b".")
        (tmp_path / f"p{protocol}.bin").write_bytes(data)
        with pytest.raises(InputFileError, match="a Python pickle"):
            io.read_cloud(tmp_path / f"p{protocol}.bin")


def test_a_polygon_closing_its_loop_on_its_first_vertex_reads(tmp_path):
    """`4 0 1 2 0` over 3 vertices repeats the first corner to close the loop: legal, as before."""
    (tmp_path / "loop.off").write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n4 0 1 2 0\n")
    v, f = io.read_mesh(tmp_path / "loop.off")
    assert len(v) == 3 and f.tolist() == [[0, 1, 2], [0, 2, 0]]
    (tmp_path / "bad.off").write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n5 0 1 2 0 1\n")
    with pytest.raises(InputFileError, match="5 corners, more than the 3 vertices"):
        io.read_mesh(tmp_path / "bad.off")


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
