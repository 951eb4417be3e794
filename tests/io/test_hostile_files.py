"""Hostile files against the readers: lying headers, decompression bombs, memory that
grows with the file or worse, silent wrong data. Files are made on the fly and kept small: sparse
files and declared sizes stand in for gigabytes. Memory is a size bound, measured in a subprocess
from its peak RSS (VmHWM, reset just before the read), never a timing."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from clip2point import io
from clip2point.errors import InputFileError
from tests.io.reader_helpers import cloud_error_of

MB = 1 << 20
# What any read may use beyond its bound: chunk buffers, loadtxt's own, allocator slack.
FIXED = 48 * MB

_PROBE = r"""
import json, sys
from clip2point import io

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024

io.read_cloud(sys.argv[3], n_points=64)  # every lazy import and first-call allocation, done
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
except OSError:
    pass
before = status("VmRSS")
error = None
try:
    io.read_cloud(sys.argv[1], n_points=1024, **json.loads(sys.argv[2]))
except Exception as e:
    error = type(e).__name__ + ": " + str(e)
print(json.dumps({"extra": status("VmHWM") - before, "error": error}))
"""

linux_only = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS read from /proc")


@pytest.fixture(scope="module")
def warm(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("warm") / "w.npy"
    np.save(path, np.random.default_rng(0).normal(size=(100, 3)))
    return path


def peak_extra(path: Path, warm: Path, **options) -> dict:
    """Peak RSS above the RSS before the read (bytes), and the error if the read failed."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(path), json.dumps(options), str(warm)],
        capture_output=True, text=True, check=True, timeout=300,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _text_rows(n: int) -> bytes:
    """n lines "x y z" of 6-decimal numbers (1000 distinct rows, repeated)."""
    block = "".join(f"{a:.6f} {b:.6f} {c:.6f}\n" for a, b, c in np.random.default_rng(0).random((1000, 3)).tolist())
    return block.encode() * (n // 1000)


# ---------------------------------------------------------------------------------------------
# 1. memory-unsafe parsing: lying compressed PCD (more in test_ply_and_pcd.py)
# ---------------------------------------------------------------------------------------------


def test_compressed_pcd_declaring_1e8_points_in_144_bytes(tmp_path):
    header = b"VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 100000000\nHEIGHT 1\nPOINTS 100000000\nDATA binary_compressed\n"
    (tmp_path / "lie.pcd").write_bytes(header + struct.pack("<II", 8, 1_200_000_000) + b"\x1f" * 8)
    assert "max_points" in cloud_error_of(tmp_path / "lie.pcd")
    (tmp_path / "lie5.pcd").write_bytes(header.replace(b"100000000", b"100000") + struct.pack("<II", 8, 1_200_000) + b"\x07abcdefgh")
    assert "corrupt LZF data" in cloud_error_of(tmp_path / "lie5.pcd")


# ---------------------------------------------------------------------------------------------
# 2. decompression bombs, and bounded error lines
# ---------------------------------------------------------------------------------------------


def test_npz_bomb_is_refused_before_inflating(tmp_path, warm):
    np.savez_compressed(tmp_path / "bomb.npz", points=np.zeros((4_000_000, 3)))  # 96 MB inflated, ~100 KB
    assert (tmp_path / "bomb.npz").stat().st_size < 1 * MB
    msg = cloud_error_of(tmp_path / "bomb.npz", max_points=100_000)
    assert "uncompressed bytes, more than the limit" in msg
    # Within the byte limit but over max_points: refused from the member's own header.
    msg = cloud_error_of(tmp_path / "bomb.npz", max_points=1_000_000 * 3)
    assert "declares 4000000 points, more than the limit of 3000000" in msg
    if Path("/proc/self/status").exists():
        assert peak_extra(tmp_path / "bomb.npz", warm, max_points=100_000)["extra"] < FIXED


def test_npz_member_that_inflates_past_its_declared_size(tmp_path):
    import io as stdio

    buf = stdio.BytesIO()
    np.save(buf, np.ones((1000, 3)))
    with zipfile.ZipFile(tmp_path / "ok.npz", "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("points.npy", buf.getvalue())
    data = bytearray((tmp_path / "ok.npz").read_bytes())
    # Understate the member's size in both headers: zipfile stops at the declared size, and the
    # .npy header inside asks for more than that.
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.index(sig) + off
        assert struct.unpack_from("<I", data, at)[0] == len(buf.getvalue())
        struct.pack_into("<I", data, at, 1000)
    (tmp_path / "lie.npz").write_bytes(bytes(data))
    assert "npz" in cloud_error_of(tmp_path / "lie.npz")


def test_error_lines_are_bounded(tmp_path):
    names = {f"array_with_a_rather_long_name_{i:05d}": np.zeros(1) for i in range(3000)}
    np.savez(tmp_path / "many.npz", **names)
    msg = cloud_error_of(tmp_path / "many.npz")
    assert "and 2995 more" in msg
    assert len(msg) <= len(str(tmp_path / "many.npz")) + 2 + InputFileError.MAX_PROBLEM
    assert len(str(InputFileError("f.ply", "x" * 10_000))) <= len("f.ply: ") + InputFileError.MAX_PROBLEM


# ---------------------------------------------------------------------------------------------
# 3. memory bounded by the file: header first, counts checked, chunked bodies
# ---------------------------------------------------------------------------------------------


def _sparse(path: Path, head: bytes, size: int = 2 << 30) -> Path:
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)  # a hole: no disk, no page cache
    return path


@linux_only
@pytest.mark.parametrize(
    ("name", "head", "needle"),
    [
        ("junk.ply", b"GARBAGE", "not a PLY file"),
        ("noend.ply", b"ply\nformat binary_little_endian 1.0\n", "longer than"),
        ("many.ply", b"ply\nformat binary_little_endian 1.0\nelement vertex 160000000\nproperty float x\n"
                     b"property float y\nproperty float z\nend_header\n", "max_points"),
        ("junk.pcd", b"# nothing\n", "longer than"),
        ("junk.off", b"OFF\n100000000000 1 0\n", "looks binary"),
        ("junk.stl", b"\x00" * 80 + struct.pack("<I", 10), "truncated binary STL"),
        ("junk.npy", "npy-header", "max_points"),
        ("junk.obj", b"\x00\x01", "looks binary"),
        ("junk.xyz", b"\x00\x01", "looks binary"),
    ],
)  # fmt: skip
def test_two_gigabyte_sparse_files_cost_their_header_only(tmp_path, warm, name, head, needle):
    if head == "npy-header":
        import io as stdio

        buf = stdio.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": (10**10, 3)})
        head = np.lib.format.MAGIC_PREFIX + b"\x01\x00" + buf.getvalue() if not buf.getvalue().startswith(b"\x93") else buf.getvalue()
    path = _sparse(tmp_path / name, head)
    got = peak_extra(path, warm)
    assert got["error"] is not None and needle in got["error"], got
    assert got["extra"] < FIXED, got


@linux_only
@pytest.mark.parametrize("fmt", ["ascii_ply", "ascii_pcd", "xyz", "binary_ply", "npy", "off", "obj"])
def test_peak_memory_stays_under_four_times_the_file(tmp_path, warm, fmt):
    n = 400_000
    rows = _text_rows(n)
    if fmt == "ascii_ply":
        head = f"ply\nformat ascii 1.0\nelement vertex {n}\nproperty float x\nproperty float y\nproperty float z\nend_header\n"
        path, data = tmp_path / "a.ply", head.encode() + rows
    elif fmt == "ascii_pcd":
        head = f"FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nPOINTS {n}\nDATA ascii\n"
        path, data = tmp_path / "a.pcd", head.encode() + rows
    elif fmt == "xyz":
        path, data = tmp_path / "a.xyz", rows
    elif fmt == "binary_ply":
        n = 2_000_000
        head = f"ply\nformat binary_little_endian 1.0\nelement vertex {n}\nproperty float x\nproperty float y\nproperty float z\nend_header\n"
        pts = np.random.default_rng(0).normal(size=(n, 3)).astype("<f4")
        path, data = tmp_path / "b.ply", head.encode() + pts.tobytes()
    elif fmt == "npy":
        path = tmp_path / "a.npy"
        np.save(path, np.random.default_rng(0).normal(size=(2_000_000, 3)).astype(np.float32))
        data = None
    else:  # a triangle mesh, as text
        nv = n // 2
        tris = np.random.default_rng(0).integers(0, nv, size=(n, 3))
        tris1 = (tris + 1).tolist()
        if fmt == "off":
            body = f"OFF\n{nv} {n} 0\n".encode() + rows[: nv * len(rows) // n]
            body += b"".join(b"3 %d %d %d\n" % tuple(t) for t in tris.tolist())
            path = tmp_path / "m.off"
        else:
            body = b"v " + rows[: nv * len(rows) // n].replace(b"\n", b"\nv ")[:-2]
            body += b"".join(b"f %d %d %d\n" % tuple(t) for t in tris1)
            path = tmp_path / "m.obj"
        data = body
    if data is not None:
        path.write_bytes(data)
    size = path.stat().st_size
    got = peak_extra(path, warm)
    assert got["error"] is None, got
    assert got["extra"] < 4 * size + FIXED, (got, size)


@linux_only
@pytest.mark.parametrize("fmt", ["off", "obj", "ascii_ply", "binary_ply"])
def test_a_polygon_with_more_corners_than_vertices_is_refused_before_its_fan(tmp_path, warm, fmt):
    """A 20 MB OFF with one 10M-vertex polygon over 3 vertices took 2.5 GB (about 125x
    the file). A polygon visits each vertex once, so its corners cannot outnumber the mesh's
    vertices (for OBJ, whose faces may come first: the vertices the file has room for)."""
    k = 1_000_000
    idx = (np.arange(k) % 3).astype(str)
    tri = "0 0 0\n1 0 0\n0 1 0\n"
    if fmt == "off":
        body = f"OFF\n3 1 0\n{tri}{k} ".encode() + " ".join(idx).encode() + b"\n"
    elif fmt == "obj":
        body = ("v " + tri.replace("\n", "\nv ")[:-2] + "f ").encode() + " ".join((np.arange(k) % 3 + 1).astype(str)).encode() + b"\n"
    elif fmt == "ascii_ply":
        head = "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
        head += "element face 1\nproperty list int int vertex_indices\nend_header\n"
        body = f"{head}{tri}{k} ".encode() + " ".join(idx).encode() + b"\n"
    else:
        head = "ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
        head += "element face 1\nproperty list int int vertex_indices\nend_header\n"
        verts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], "<f4").tobytes()
        body = head.encode() + verts + np.int32(k).tobytes() + (np.arange(k) % 3).astype("<i4").tobytes()
    path = tmp_path / f"poly.{'ply' if 'ply' in fmt else fmt}"
    path.write_bytes(body)
    size = path.stat().st_size
    got = peak_extra(path, warm)
    assert got["error"] is not None and "corners, more than" in got["error"] and "\n" not in got["error"], got
    assert got["extra"] < 4 * size + FIXED, (got, size)


@linux_only
def test_a_huge_polygon_over_as_many_vertices_stays_within_the_bound(tmp_path, warm):
    """The legitimate extreme: one polygon through every one of a mesh's k vertices."""
    k = 1_000_000
    rng = np.random.default_rng(0)
    verts = b"".join(b"%.4f %.4f %.4f\n" % tuple(r) for r in rng.random((k, 3)).tolist())
    body = f"OFF\n{k} 1 0\n".encode() + verts + f"{k} ".encode() + " ".join(rng.permutation(k).astype(str)).encode() + b"\n"
    (tmp_path / "poly.off").write_bytes(body)
    size = (tmp_path / "poly.off").stat().st_size
    got = peak_extra(tmp_path / "poly.off", warm)
    assert got["error"] is None, got
    assert got["extra"] < 4 * size + FIXED, (got, size)


def test_binary_ply_with_mixed_face_lists_is_read_without_a_loop_per_item(tmp_path):
    """A 20M-item list element spent 92 s in a Python loop; here a mixed triangle / quad
    list is read window by window (and must give exactly the fan triangles)."""
    nv, nf = 50, 200_000
    verts = np.random.default_rng(0).random((nv, 3)).astype("<f4")
    rng = np.random.default_rng(1)
    ks = rng.integers(3, 5, size=nf)
    parts, expected = [], []
    for k in ks.tolist():
        ids = rng.integers(0, nv, size=k)
        parts.append(struct.pack(f"<B{k}i", k, *ids))
        expected += [(ids[0], ids[j], ids[j + 1]) for j in range(1, k - 1)]
    header = (
        f"ply\nformat binary_little_endian 1.0\nelement vertex {nv}\nproperty float x\nproperty float y\n"
        f"property float z\nelement face {nf}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    (tmp_path / "mixed.ply").write_bytes(header.encode() + verts.tobytes() + b"".join(parts))
    _, f = io.read_mesh(tmp_path / "mixed.ply")
    np.testing.assert_array_equal(f, np.array(expected))
    (tmp_path / "cut.ply").write_bytes(header.encode() + verts.tobytes() + b"".join(parts)[:-5])
    assert "truncated binary PLY" in cloud_error_of(tmp_path / "cut.ply")


# ---------------------------------------------------------------------------------------------
# 4. silent wrong data: negative and absurd counts
# ---------------------------------------------------------------------------------------------


def test_negative_and_absurd_counts_are_errors(tmp_path):
    (tmp_path / "neg.off").write_text("OFF\n-1 -1 0\n3 0 1 2\n0 0 0\n1 0 0\n0 1 0\n")
    assert "negative number of vertices" in cloud_error_of(tmp_path / "neg.off")
    header = "FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 3\nHEIGHT 1\nPOINTS -3\nDATA ascii\n"
    (tmp_path / "neg.pcd").write_text(header + "1 2 3\n4 5 6\n7 8 9\n")
    assert "negative number of points" in cloud_error_of(tmp_path / "neg.pcd")
    (tmp_path / "big.off").write_text("OFF\n40000000 0 0\n0 0 0\n1 0 0\n0 1 0\n")
    assert "can hold at most" in cloud_error_of(tmp_path / "big.off")
    (tmp_path / "poly.off").write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n-3 0 1 2\n")
    assert "declares -3 vertices" in cloud_error_of(tmp_path / "poly.off")
    (tmp_path / "idx.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 x\n")
    assert "not an integer" in cloud_error_of(tmp_path / "idx.obj")
    (tmp_path / "zero.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 0 1 2\n")
    assert "vertex 0" in cloud_error_of(tmp_path / "zero.obj")
    header = "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
    (tmp_path / "short.ply").write_text(header + "element face 1\nproperty list uchar int vertex_indices\nend_header\n"
                                        "0 0 0\n1 0 0\n0 1 0\n4 0 1 2\n")  # fmt: skip
    assert "declares 4 vertices but lists 3" in cloud_error_of(tmp_path / "short.ply")


def test_options_are_checked(tmp_path):
    from clip2point.errors import OptionError

    np.save(tmp_path / "a.npy", np.eye(3))
    for bad in (0, -5, 2.5, True):
        with pytest.raises(OptionError, match="max_points"):
            io.read_cloud(tmp_path / "a.npy", max_points=bad)
    assert os.path.exists(tmp_path / "a.npy")
