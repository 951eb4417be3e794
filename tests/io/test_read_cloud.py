"""read_cloud whatever the format: sampling (random, exact blocked FPS), normalisation into the unit
sphere, the up axis, dropped rows, the errors every reader shares, the example scans, no torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clip2point import io
from clip2point.errors import UsageError
from clip2point.io import read_cloud
from tests.io.reader_helpers import (
    CUBE_QUADS,
    CUBE_V,
    PTS,
    assert_error,
    scan_cloud,
)

# ---------------------------------------------------------------------------------------------
# Sampling
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


def test_bad_sampling_options(big_npy):
    with pytest.raises(UsageError):
        io.read_cloud(big_npy, sampling="grid")
    with pytest.raises(UsageError):
        io.read_cloud(big_npy, n_points=0)


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


# ---------------------------------------------------------------------------------------------
# Normalisation and up axis
# ---------------------------------------------------------------------------------------------


def test_normalisation():
    p = io.normalize_unit_sphere(np.random.default_rng(0).normal(5.0, 3.0, (500, 3)))
    np.testing.assert_allclose(p.mean(axis=0), 0, atol=1e-6)
    assert np.linalg.norm(p, axis=1).max() == pytest.approx(1.0, abs=1e-6)


def test_read_cloud_is_normalised(big_npy):
    p = io.read_cloud(big_npy, n_points=512)
    np.testing.assert_allclose(p.mean(axis=0), 0, atol=1e-6)
    assert np.linalg.norm(p, axis=1).max() == pytest.approx(1.0, abs=1e-6)


def test_georeferenced_scan_keeps_its_shape(tmp_path):
    local = scan_cloud()
    np.save(tmp_path / "local.npy", local)
    np.save(tmp_path / "utm.npy", local + [512345.0, 5412345.0, 250.0])  # float64, metres in UTM
    a = read_cloud(tmp_path / "local.npy", n_points=512)
    b = read_cloud(tmp_path / "utm.npy", n_points=512)
    np.testing.assert_allclose(a, b, atol=1e-5)


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


# ---------------------------------------------------------------------------------------------
# Errors every reader shares; the example scans
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


def test_example_scans_read(tmp_path):
    scans = Path(__file__).resolve().parents[2] / "examples" / "scans"
    files = sorted(f for f in scans.iterdir() if f.suffix.lower() in io.SUPPORTED_EXTENSIONS)
    assert len(files) >= 8
    for f in files:
        p = io.read_cloud(f, n_points=512)
        assert p.shape == (512, 3) and np.isfinite(p).all()


def test_io_imports_no_torch():

    code = "import sys, clip2point.io; print('torch' in sys.modules, 'open3d' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
