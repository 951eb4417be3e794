"""Files that real scanners and tools produce and that broke earlier readers: far-away coordinates,
overflowing values, misnamed NumPy files, byte-order marks, binary STLs whose header says 'solid'."""

from __future__ import annotations

import os

import numpy as np
import pytest

from clip2point.errors import InputFileError
from clip2point.io import read_cloud, read_points, write_off


def _cloud(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(n, 3)) * [0.4, 0.2, 0.9]
    return p


def test_georeferenced_scan_keeps_its_shape(tmp_path):
    local = _cloud()
    np.save(tmp_path / "local.npy", local)
    np.save(tmp_path / "utm.npy", local + [512345.0, 5412345.0, 250.0])  # float64, metres in UTM
    a = read_cloud(tmp_path / "local.npy", n_points=512)
    b = read_cloud(tmp_path / "utm.npy", n_points=512)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_values_that_overflow_float32_are_an_error_or_dropped_never_nan(tmp_path):
    p = _cloud(500)
    p[7] = 1e300  # a sentinel "invalid point": finite in float64
    np.savetxt(tmp_path / "s.xyz", p)
    try:
        out = read_cloud(tmp_path / "s.xyz", n_points=256)
    except InputFileError as e:
        assert "s.xyz" in str(e)
    else:
        assert np.isfinite(out).all()


def test_huge_mesh_coordinates_sample_without_overflow(tmp_path):
    v = np.array([[0, 0, 0], [1e200, 0, 0], [0, 1e200, 0], [1e200, 1e200, 1e200]], dtype=np.float64)
    (tmp_path / "m.off").write_text("OFF\n4 2 0\n" + "\n".join(" ".join(f"{x:.17g}" for x in r) for r in v) + "\n3 0 1 2\n3 0 1 3\n")
    out = read_cloud(tmp_path / "m.off", n_points=128)
    assert out.shape == (128, 3) and np.isfinite(out).all()
    assert np.abs(np.linalg.norm(out, axis=1).max() - 1) < 1e-5


def test_npy_and_npz_named_as_each_other_are_one_line_errors(tmp_path):
    a = _cloud(50).astype(np.float32)
    np.save(tmp_path / "x.npy", a)
    os.replace(tmp_path / "x.npy", tmp_path / "really_npy.npz")
    np.savez(tmp_path / "y.npz", points=a)
    os.replace(tmp_path / "y.npz", tmp_path / "really_npz.npy")
    (tmp_path / "trunc.npz").write_bytes(b"PK\x03\x04broken")
    for name, needle in [("really_npy.npz", ".npy"), ("really_npz.npy", ".npz"), ("trunc.npz", "npz")]:
        with pytest.raises(InputFileError) as e:
            read_points(tmp_path / name)
        assert name in str(e.value) and needle in str(e.value) and "\n" not in str(e.value)


def test_utf8_byte_order_mark_does_not_cost_the_first_point(tmp_path):
    (tmp_path / "bom.xyz").write_bytes(b"\xef\xbb\xbf1 2 3\n4 5 6\n7 8 10\n")
    assert len(read_points(tmp_path / "bom.xyz")) == 3
    v = np.eye(3) + 0.5
    write_off(tmp_path / "plain.off", v.astype(np.float32), np.array([[0, 1, 2]]))
    (tmp_path / "bom.off").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "plain.off").read_bytes())
    np.testing.assert_allclose(read_points(tmp_path / "bom.off"), read_points(tmp_path / "plain.off"))


def test_binary_stl_with_solid_header_and_trailing_bytes(tmp_path):
    dt = np.dtype([("normal", "<f4", (3,)), ("v", "<f4", (3, 3)), ("attr", "<u2")])
    tri = np.zeros(2, dtype=dt)
    tri["v"][0] = [[0, 0, 0], [1, 0, 0], [0, 1, 0]]
    tri["v"][1] = [[0, 0, 1], [1, 0, 1], [0, 1, 1]]
    header = b"solid exported by a CAD tool".ljust(80, b" ")
    data = header + np.uint32(2).tobytes() + tri.tobytes() + b"\x00" * 7
    (tmp_path / "b.stl").write_bytes(data)
    assert read_points(tmp_path / "b.stl").shape == (6, 3)
