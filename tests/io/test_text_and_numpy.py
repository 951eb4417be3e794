"""Text rows (.xyz, .txt, .pts) and NumPy files (.npy, .npz): headers, separators, byte-order
marks, key rules, values that overflow, files named as each other."""

from __future__ import annotations

import os

import numpy as np
import pytest

from clip2point.errors import InputFileError
from clip2point.io import read_cloud, read_points, write_off
from tests.io.reader_helpers import (
    PTS,
    assert_error,
    raw,
    scan_cloud,
)

# ---------------------------------------------------------------------------------------------
# Text
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


def test_utf8_byte_order_mark_does_not_cost_the_first_point(tmp_path):
    (tmp_path / "bom.xyz").write_bytes(b"\xef\xbb\xbf1 2 3\n4 5 6\n7 8 10\n")
    assert len(read_points(tmp_path / "bom.xyz")) == 3
    v = np.eye(3) + 0.5
    write_off(tmp_path / "plain.off", v.astype(np.float32), np.array([[0, 1, 2]]))
    (tmp_path / "bom.off").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "plain.off").read_bytes())
    np.testing.assert_allclose(read_points(tmp_path / "bom.off"), read_points(tmp_path / "plain.off"))


def test_values_that_overflow_float32_are_an_error_or_dropped_never_nan(tmp_path):
    p = scan_cloud(500)
    p[7] = 1e300  # a sentinel "invalid point": finite in float64
    np.savetxt(tmp_path / "s.xyz", p)
    try:
        out = read_cloud(tmp_path / "s.xyz", n_points=256)
    except InputFileError as e:
        assert "s.xyz" in str(e)
    else:
        assert np.isfinite(out).all()


# ---------------------------------------------------------------------------------------------
# NumPy
# ---------------------------------------------------------------------------------------------


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


def test_npy_and_npz_named_as_each_other_are_one_line_errors(tmp_path):
    a = scan_cloud(50).astype(np.float32)
    np.save(tmp_path / "x.npy", a)
    os.replace(tmp_path / "x.npy", tmp_path / "really_npy.npz")
    np.savez(tmp_path / "y.npz", points=a)
    os.replace(tmp_path / "y.npz", tmp_path / "really_npz.npy")
    (tmp_path / "trunc.npz").write_bytes(b"PK\x03\x04broken")
    for name, needle in [("really_npy.npz", ".npy"), ("really_npz.npy", ".npz"), ("trunc.npz", "npz")]:
        with pytest.raises(InputFileError) as e:
            read_points(tmp_path / name)
        assert name in str(e.value) and needle in str(e.value) and "\n" not in str(e.value)
