"""PLY and PCD, the formats of most scanners' tools: ASCII and binary, written by hand, by us and
by open3d; PCL's compressed PCD decoded here (LZF), its lies refused."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from clip2point import io
from clip2point.io._lzf import lzf_decompress
from tests.io.reader_helpers import (
    PTS,
    SCAN_PTS,
    assert_error,
    error_of,
    raw,
)

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
    grid = np.round(SCAN_PTS, 1)  # repeated values: back-references
    _compressed_pcd(tmp_path / "c.pcd", grid)
    np.testing.assert_array_equal(io.read_points(tmp_path / "c.pcd"), grid.astype(np.float32))


def test_compressed_pcd_lies_are_errors_not_heap_reads(tmp_path):
    # A small file whose header declares far more points than its data holds.
    _compressed_pcd(tmp_path / "big.pcd", SCAN_PTS[:4], declared=100_000, sizes=None)
    assert "uncompressed bytes" in error_of(tmp_path / "big.pcd")
    _compressed_pcd(tmp_path / "huge.pcd", SCAN_PTS[:4], declared=100_000_000)
    assert "max_points" in error_of(tmp_path / "huge.pcd")
    n = 4
    _compressed_pcd(tmp_path / "usize.pcd", SCAN_PTS[:n])
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
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(SCAN_PTS))
    assert o3d.io.write_point_cloud(str(tmp_path / "o.pcd"), cloud, compressed=True)
    np.testing.assert_allclose(io.read_points(tmp_path / "o.pcd"), SCAN_PTS, atol=1e-5)
