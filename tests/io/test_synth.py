"""clip2point.synth and `c2p synth`: valid meshes, seeded determinism, dataset layout, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from clip2point import io, synth
from clip2point.app import app
from clip2point.errors import UsageError


@pytest.mark.parametrize("name", synth.SHAPES)
def test_every_class_gives_a_valid_mesh_and_cloud(name):
    rng = np.random.default_rng(7)
    v, f = synth.random_mesh(name, rng)
    assert v.dtype == np.float32 and v.ndim == 2 and v.shape[1] == 3 and np.isfinite(v).all()
    assert f.dtype == np.int64 and f.ndim == 2 and f.shape[1] == 3
    assert f.min() >= 0 and f.max() < len(v)
    assert io._triangle_areas(v.astype(np.float64), f).sum() > 0
    cloud = synth.random_cloud(name, rng, 300)
    assert cloud.shape == (300, 3) and cloud.dtype == np.float32 and np.isfinite(cloud).all()
    assert np.ptp(cloud, axis=0).min() > 0


def test_the_thirteen_documented_classes_and_an_unknown_class():
    # The README and c2p-demo's labels (the Makefile's LABELS) name these 13, in this order.
    assert synth.SHAPES == ("cube", "sphere", "cylinder", "cone", "torus", "pyramid", "capsule", "ring",
                            "table", "chair", "mug", "bowl", "bottle")
    with pytest.raises(UsageError, match="unknown shape class blob.*valid: cube"):
        synth.check_classes(["cube", "blob"])
    with pytest.raises(UsageError):
        synth.random_mesh("blob", np.random.default_rng(0))


def test_seeded_determinism():
    a = synth.random_cloud("torus", np.random.default_rng(3), 256)
    b = synth.random_cloud("torus", np.random.default_rng(3), 256)
    c = synth.random_cloud("torus", np.random.default_rng(4), 256)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_pose_is_yaw_plus_small_tilt():
    rng = np.random.default_rng(0)
    ups, yaws = [], []
    for _ in range(200):
        r = synth.random_pose(rng)
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-9)
        ups.append((r @ [0, 0, 1])[2])
        x = r @ [1, 0, 0]
        yaws.append(math.atan2(x[1], x[0]))
    assert min(ups) >= math.cos(math.radians(synth.MAX_TILT_DEG)) - 1e-9
    assert np.ptp(yaws) > 5.5  # yaws cover the circle


def test_dropout_removes_a_cap_but_keeps_most_of_the_surface():
    # random_cloud draws its mesh first, so the same seed gives the mesh behind the cloud.
    dirs = np.random.default_rng(0).normal(size=(300, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    coverage = []
    for seed in range(20):
        v, _ = synth.random_mesh("sphere", np.random.default_rng(seed))
        cloud = synth.random_cloud("sphere", np.random.default_rng(seed), 3000).astype(np.float64)
        centre = (v.min(axis=0) + v.max(axis=0)) / 2
        u = cloud - centre
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        # A direction is covered when some point lies within ~8 degrees of it.
        coverage.append(((dirs @ u.T).max(axis=1) > math.cos(math.radians(8))).mean())
    assert min(coverage) > 0.65  # at most 30% of the surface is dropped
    assert min(coverage) < 0.9  # and some samples do miss a sizeable cap


def _d2_feature(points: np.ndarray) -> np.ndarray:
    p = io.normalize_unit_sphere(points)
    i, j = np.random.default_rng(0).integers(len(p), size=(2, 4000))
    d2 = np.histogram(np.linalg.norm(p[i] - p[j], axis=1), 16, (0, 2))[0] / 4000
    radial = np.histogram(np.linalg.norm(p, axis=1), 16, (0, 1))[0] / len(p)
    return np.concatenate([d2, radial])


def test_classes_are_geometrically_distinct():
    """Nearest neighbour on rotation-invariant shape histograms beats chance by far (13 classes: 8%)."""
    train, test = [], []
    for k, name in enumerate(synth.SHAPES):
        train += [
            (k, _d2_feature(synth.random_cloud(name, synth.sample_rng(0, "train", name, i), 512)))
            for i in range(8)
        ]
        test += [
            (k, _d2_feature(synth.random_cloud(name, synth.sample_rng(0, "test", name, i), 512)))
            for i in range(4)
        ]
    ty, tx = np.array([k for k, _ in train]), np.stack([x for _, x in train])
    hits = [ty[((tx - x) ** 2).sum(1).argmin()] == k for k, x in test]
    assert np.mean(hits) > 0.5


@pytest.mark.parametrize("fmt", synth.FORMATS)
def test_write_dataset_layout_and_manifest(tmp_path, fmt):
    manifest = synth.write_dataset(
        tmp_path / "d", ["cube", "torus"], per_class=3, test_per_class=1, fmt=fmt, n_points=128, seed=5
    )
    root = tmp_path / "d"
    assert (root / "classes.txt").read_text().split() == ["cube", "torus"]
    assert json.loads((root / "synth.json").read_text()) == manifest
    assert manifest["classes"] == ["cube", "torus"] and manifest["format"] == fmt and manifest["seed"] == 5
    assert manifest["counts"] == {"train": {"cube": 3, "torus": 3}, "test": {"cube": 1, "torus": 1}}
    assert manifest["total"] == 8 and "version" in manifest
    for split, count in (("train", 3), ("test", 1)):
        for name in ("cube", "torus"):
            files = sorted((root / split / name).iterdir())
            assert [f.name for f in files] == [f"{name}_{i:04d}.{fmt}" for i in range(1, count + 1)]
            for f in files:
                if fmt == "off":
                    v, tris = io.read_mesh(f)
                    assert len(tris) > 0
                else:
                    assert io.read_points(f).shape == (128, 3)
                assert io.read_cloud(f, n_points=64).shape == (64, 3)


def test_dataset_is_determined_by_seed_and_stable_under_more_samples(tmp_path):
    synth.write_dataset(
        tmp_path / "a", ["cone"], per_class=2, test_per_class=1, fmt="npy", n_points=64, seed=1
    )
    synth.write_dataset(
        tmp_path / "b", ["sphere", "cone"], per_class=4, test_per_class=2, fmt="npy", n_points=64, seed=1
    )
    synth.write_dataset(
        tmp_path / "c", ["cone"], per_class=2, test_per_class=1, fmt="npy", n_points=64, seed=2
    )
    for rel in ("train/cone/cone_0001.npy", "train/cone/cone_0002.npy", "test/cone/cone_0001.npy"):
        np.testing.assert_array_equal(np.load(tmp_path / "a" / rel), np.load(tmp_path / "b" / rel))
        assert not np.array_equal(np.load(tmp_path / "a" / rel), np.load(tmp_path / "c" / rel))
    # Train and test samples of the same index differ.
    assert not np.array_equal(
        np.load(tmp_path / "a/train/cone/cone_0001.npy"), np.load(tmp_path / "a/test/cone/cone_0001.npy")
    )


def test_write_dataset_rejects_bad_options(tmp_path):
    with pytest.raises(UsageError, match="format"):
        synth.write_dataset(tmp_path, ["cube"], fmt="xyz")
    with pytest.raises(UsageError, match="unknown shape class"):
        synth.write_dataset(tmp_path, ["cube", "nope"])


def test_cli_synth(tmp_path):
    runner = CliRunner()
    out = tmp_path / "ds"
    result = runner.invoke(
        app,
        ["synth", str(out), "--classes", "ring,mug", "--per-class", "4", "--points", "100", "--seed", "3"],
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "synth.json").read_text())
    # Default test count: per-class // 4.
    assert manifest["counts"]["test"] == {"ring": 1, "mug": 1}
    assert len(list(out.glob("*/*/*.ply"))) == 10
    assert "wrote 10 ply files" in result.output
    assert io.read_points(out / "train/mug/mug_0004.ply").shape == (100, 3)


def test_cli_synth_unknown_class_and_list(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["synth", str(tmp_path / "x"), "--classes", "cube,blob"])
    assert isinstance(result.exception, UsageError)
    assert "valid: cube" in str(result.exception)
    assert not (tmp_path / "x").exists()
    result = runner.invoke(app, ["synth", "--list"])
    assert result.exit_code == 0 and result.output.split() == list(synth.SHAPES)
    assert isinstance(runner.invoke(app, ["synth"]).exception, UsageError)
