"""Dataset layouts (detection, parsing, errors) and seeded k-shot sampling, on tiny hand-made files."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from clip2point.errors import DatasetError, InputFileError, UsageError
from clip2point.evaluate import read_samples
from clip2point.io import normalize_unit_sphere
from clip2point.training.datasets import detect_layout, open_dataset
from clip2point.training.h5_datasets import SCANOBJECTNN_LABELS
from clip2point.training.shots import sample_shots
from clip2point.views import apply_up_axis


def _cloud(n: int = 64, seed: int = 0, scale=(1.0, 2.0, 3.0)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, 3)) * np.asarray(scale)).astype(np.float32)


def _write_npy_folder(base, classes, per_class, seed=0):
    for c, name in enumerate(classes):
        d = base / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            np.save(d / f"{name}_{i:02d}.npy", _cloud(40, seed + 100 * c + i))


CUBE_OFF = """OFF
8 6 0
0 0 0
1 0 0
1 1 0
0 1 0
0 0 1
1 0 1
1 1 1
0 1 1
4 0 3 2 1
4 4 5 6 7
4 0 1 5 4
4 1 2 6 5
4 2 3 7 6
4 3 0 4 7
"""


def test_folder_with_split_folders(tmp_path):
    _write_npy_folder(tmp_path / "train", ["b_cls", "a_cls"], 3)
    _write_npy_folder(tmp_path / "test", ["a_cls", "b_cls"], 2)
    assert detect_layout(tmp_path) == "folder"
    train = open_dataset(tmp_path, split="train", n_points=16)
    test = open_dataset(tmp_path, split="test", n_points=16)
    assert train.labels == test.labels == ["a_cls", "b_cls"]
    assert len(train) == 6 and len(test) == 4
    assert train.sample_ids[0] == "train/a_cls/a_cls_00.npy"
    pts, label = train[4]
    assert pts.shape == (16, 3) and pts.dtype == np.float32 and label == 1
    assert np.linalg.norm(pts, axis=1).max() == pytest.approx(1.0, abs=1e-5)
    # Deterministic for (seed, sample): reading twice gives the same points; another seed does not.
    assert np.array_equal(pts, train[4][0])
    other = open_dataset(tmp_path, split="train", n_points=16, seed=1)
    assert not np.array_equal(pts, other[4][0])


def test_folder_without_splits_uses_a_seeded_disjoint_ratio_split(tmp_path):
    _write_npy_folder(tmp_path, ["cat", "dog"], 10)
    kw = {"n_points": 8, "test_fraction": 0.3}
    train = open_dataset(tmp_path, "folder", "train", **kw)
    test = open_dataset(tmp_path, "folder", "test", **kw)
    assert 2 <= len(test) <= 14 and len(train) + len(test) == 20
    assert not set(train.sample_ids) & set(test.sample_ids)
    assert sorted(train.sample_ids + test.sample_ids) == sorted(
        f"{c}/{c}_{i:02d}.npy" for c in ("cat", "dog") for i in range(10)
    )
    assert open_dataset(tmp_path, "folder", "test", **kw).sample_ids == test.sample_ids
    other = open_dataset(tmp_path, "folder", "test", split_seed=5, **kw)
    assert other.sample_ids != test.sample_ids


def test_ratio_split_keeps_every_file_on_its_side_when_files_are_added(tmp_path):
    _write_npy_folder(tmp_path, ["cat", "dog"], 12)
    kw = {"n_points": 8, "test_fraction": 0.25}
    before = {s: set(open_dataset(tmp_path, "folder", s, **kw).sample_ids) for s in ("train", "test")}
    for i in range(12, 20):  # one at a time would do; several make a whole-list reshuffle certain to show
        np.save(tmp_path / "cat" / f"cat_{i:02d}.npy", _cloud(40, 500 + i))
    after = {s: set(open_dataset(tmp_path, "folder", s, **kw).sample_ids) for s in ("train", "test")}
    assert before["train"] <= after["train"] and before["test"] <= after["test"]
    # At least one test file per class, even where no file's hash falls below a tiny fraction.
    tiny = open_dataset(tmp_path, "folder", "test", n_points=8, test_fraction=0.001)
    assert sorted(tiny.targets) == [0, 1]


def _write_h5(root, data, label, group=False):
    root.mkdir(parents=True, exist_ok=True)
    (root / "shape_names.txt").write_text("a\nb\n")
    with h5py.File(root / "ply_data_train0.h5", "w") as h:
        if group:
            h.create_group("data").create_dataset("x", data=data)
        else:
            h["data"] = data
        h["label"] = label


_CLOUDS = np.random.default_rng(0).normal(size=(4, 64, 3)).astype(np.float32)


@pytest.mark.parametrize(
    ("data", "label", "group", "message"),
    [
        (_CLOUDS, np.array([0, 1, 0, 1]), True, "'data' is an h5 group"),
        (_CLOUDS.transpose(0, 2, 1).copy(), np.array([0, 1, 0, 1]), False, "looks channel-first"),
        (_CLOUDS.reshape(4, -1), np.array([0, 1, 0, 1]), False, r"'data' has shape \(4, 192\)"),
        (_CLOUDS, np.array([[0, 1], [1, 0]]), False, r"'label' has shape \(2, 2\)"),
        (_CLOUDS, np.array([0.0, 1.0, np.nan, 1.0]), False, "'label' holds nan"),
        (_CLOUDS, np.array([0.0, 1.5, 0.0, 1.0]), False, "'label' holds 1.5"),
        (_CLOUDS, np.array([b"a", b"b", b"a", b"b"]), False, "'label' holds |S1"),
        (_CLOUDS, np.array([0, 1, 2, 1]), False, "label 2 out of range for 2 classes"),
    ],
    ids=["group", "channel-first", "2d", "label-shape", "nan-label", "fractional", "text-label", "range"],
)
def test_malformed_h5_files_are_refused_naming_the_file(tmp_path, data, label, group, message):
    _write_h5(tmp_path, data, label, group)
    with pytest.raises(DatasetError, match=message) as info:
        open_dataset(tmp_path, split="train", n_points=32)
    assert "ply_data_train0.h5" in str(info.value)


def test_h5_with_float_and_n_by_1_labels_reads(tmp_path):
    _write_h5(tmp_path, _CLOUDS, np.array([[0.0], [1.0], [1.0], [0.0]]))
    assert open_dataset(tmp_path, split="train", n_points=32).targets == [0, 1, 1, 0]


def test_synth_layout(tmp_path):
    from clip2point.synth import write_dataset

    write_dataset(tmp_path, classes=["cone", "cube"], per_class=2, test_per_class=1, fmt="npy", n_points=128)
    assert detect_layout(tmp_path) == "synth"
    ds = open_dataset(tmp_path, split="test", n_points=32)
    assert ds.kind == "synth" and ds.labels == ["cone", "cube"] and ds.up == "z"
    assert ds.sample_ids == ["test/cone/cone_0001.npy", "test/cube/cube_0001.npy"]
    assert ds.targets == [0, 1]


def test_modelnet_mesh_layout(tmp_path):
    for name in ("chair", "airplane"):
        for split, n in (("train", 2), ("test", 1)):
            d = tmp_path / name / split
            d.mkdir(parents=True)
            for i in range(n):
                (d / f"{name}_{i + 1:04d}.off").write_text(CUBE_OFF)
    assert detect_layout(tmp_path) == "modelnet"
    ds = open_dataset(tmp_path, "modelnet40", "train", n_points=50)
    assert ds.labels == ["airplane", "chair"] and len(ds) == 4 and ds.up == "z"
    pts, label = ds[3]
    assert pts.shape == (50, 3) and label == 1


def _write_modelnet_h5(root, n_files=2, per_file=3, classes=("a", "b", "c")):
    root.mkdir(parents=True, exist_ok=True)
    (root / "shape_names.txt").write_text("\n".join(classes) + "\n")
    for split in ("train", "test"):
        for f in range(n_files):
            data = np.stack([_cloud(100, 10 * f + i) for i in range(per_file)])
            label = (np.arange(per_file) % len(classes)).reshape(-1, 1).astype(np.uint8)
            with h5py.File(root / f"ply_data_{split}{f}.h5", "w") as h:
                h["data"], h["label"] = data, label


def test_modelnet_h5_layout(tmp_path):
    _write_modelnet_h5(tmp_path)
    assert detect_layout(tmp_path) == "modelnet-h5"
    ds = open_dataset(tmp_path, split="train", n_points=100)
    assert len(ds) == 6 and ds.labels == ["a", "b", "c"]
    assert ds.sample_ids[4] == "ply_data_train1.h5:1"
    pts, label = ds[4]
    assert label == 1
    # All 100 points kept (n_points = stored count): the sample equals the stored cloud, normalised and
    # NOT rotated: the h5 release is y-up (PointNet rotates it about y).
    assert ds.up == "y"
    with h5py.File(tmp_path / "ply_data_train1.h5") as h:
        raw = h["data"][1]
    expected = normalize_unit_sphere(raw)
    assert np.allclose(np.sort(pts, axis=0), np.sort(expected, axis=0), atol=1e-6)


def test_h5_bad_sample_fails_alone_and_bad_file_fails_clearly(tmp_path):
    _write_modelnet_h5(tmp_path, n_files=1)
    with h5py.File(tmp_path / "ply_data_train0.h5", "a") as h:
        data = h["data"][...]
        data[1] = np.nan
        del h["data"]
        h["data"] = data
    ds = open_dataset(tmp_path, split="train")
    with pytest.raises(InputFileError, match=r"ply_data_train0.h5: sample 1: no finite points"):
        ds[1]
    ok, skipped = read_samples(ds, range(len(ds)))
    assert [i for i, _, _ in ok] == [0, 2]
    assert skipped == [{"id": "ply_data_train0.h5:1", "error": skipped[0]["error"]}]
    with h5py.File(tmp_path / "ply_data_test0.h5", "w") as h:
        h["points"] = np.zeros((2, 10, 3))
    with pytest.raises(DatasetError, match="without 'data' and 'label'"):
        open_dataset(tmp_path, split="test")


def test_modelnet_resampled_layout(tmp_path):
    (tmp_path / "modelnet40_shape_names.txt").write_text("night_stand\nvase\n")
    (tmp_path / "modelnet40_train.txt").write_text("night_stand_0001\nvase_0001\nvase_0002\n")
    (tmp_path / "modelnet40_test.txt").write_text("night_stand_0002\n")
    for name in ("night_stand_0001", "night_stand_0002", "vase_0001", "vase_0002"):
        cls = name.rsplit("_", 1)[0]
        (tmp_path / cls).mkdir(exist_ok=True)
        rows = np.concatenate([_cloud(30, len(name)), np.zeros((30, 3), np.float32)], axis=1)
        np.savetxt(tmp_path / cls / f"{name}.txt", rows, delimiter=",", fmt="%.6f")
    assert detect_layout(tmp_path) == "modelnet-resampled"
    ds = open_dataset(tmp_path, split="train", n_points=20)
    assert ds.labels == ["night_stand", "vase"] and ds.targets == [0, 1, 1]
    assert ds.up == "y"  # y-up like the h5 release: no ModelNet rotation
    assert ds[0][0].shape == (20, 3)
    (tmp_path / "modelnet40_test.txt").write_text("sofa_0001\n")
    with pytest.raises(DatasetError, match="names class 'sofa'"):
        open_dataset(tmp_path, split="test")


def test_scanobjectnn_variants(tmp_path):
    files = {
        "main_split/training_objectdataset.h5": 3,
        "main_split/test_objectdataset.h5": 2,
        "main_split/training_objectdataset_augmentedrot_scale75.h5": 5,
        "main_split_nobg/training_objectdataset.h5": 4,
    }
    for rel, n in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(tmp_path / rel, "w") as h:
            h["data"] = np.stack([_cloud(2048, i) for i in range(n)])
            h["label"] = np.arange(n) % 15
            h["mask"] = np.zeros((n, 2048))
    assert detect_layout(tmp_path) == "scanobjectnn"
    bg = open_dataset(tmp_path, split="train", n_points=64)
    assert len(bg) == 3 and bg.labels == list(SCANOBJECTNN_LABELS)
    assert bg.up == "y" and bg.sampling == "fps"
    assert len(open_dataset(tmp_path, split="train", variant="pb_t50_rs")) == 5
    assert len(open_dataset(tmp_path, split="train", variant="obj_only")) == 4
    assert len(open_dataset(tmp_path / "main_split_nobg", "scanobjectnn", "train")) == 4
    assert len(open_dataset(tmp_path, split="test")) == 2
    with pytest.raises(DatasetError, match="obj_only test file not found"):
        open_dataset(tmp_path, split="test", variant="obj_only")
    pts, _ = bg[0]
    assert pts.shape == (64, 3)
    # The official order: normalise the 2048 points, then FPS from the first point, no second normalisation.
    with h5py.File(tmp_path / "main_split/training_objectdataset.h5") as h:
        stored = normalize_unit_sphere(h["data"][0])
    assert np.array_equal(pts[0], stored[0])
    assert np.abs(pts.mean(axis=0)).max() > 1e-3  # not re-centred after sampling
    assert set(map(tuple, pts.tolist())) <= set(map(tuple, stored.tolist()))
    with pytest.raises(UsageError, match="variant must be one of"):
        open_dataset(tmp_path, split="train", variant="hardest")


def test_farthest_points_from_first_is_pointnet2s_order():
    from clip2point.training.h5_datasets import farthest_points_from_first

    pts = np.array([[0, 0, 0], [1, 0, 0], [0.4, 0, 0], [-2, 0, 0], [0, 0.1, 0]], np.float32)
    # from index 0: farthest is -2 (index 3); then the point farthest from both: 1 (index 1); then 0.4 / ...
    assert farthest_points_from_first(pts, 3).tolist() == pts[[0, 3, 1]].tolist()
    assert farthest_points_from_first(pts, 9).shape == (5, 3)


def _write_ply(path, points):
    header = f"ply\nformat ascii 1.0\nelement vertex {len(points)}\nproperty float x\nproperty float y\nproperty float z\nend_header\n"
    path.write_text(header + "".join(f"{x} {y} {z}\n" for x, y, z in points))


def test_modelnet40_ply_layout(tmp_path):
    """ModelNet40_Ply: a flat folder of <label index>_<anything>.ply, z-up, test split only."""
    from clip2point.models.prompts import MODELNET40_FOLDERS

    _write_ply(tmp_path / "23_0001.ply", _cloud(50, 1))
    _write_ply(tmp_path / "0_airplane_7.ply", _cloud(50, 2))
    _write_ply(tmp_path / "39_x.ply", _cloud(50, 3))
    assert detect_layout(tmp_path) == "modelnet40-ply"
    ds = open_dataset(tmp_path, split="test", n_points=20)  # every point is used: the authors' fixed samples
    assert ds.kind == "modelnet40-ply" and ds.labels == list(MODELNET40_FOLDERS) and ds.up == "z"
    assert sorted(ds.labels[t] for t in ds.targets) == ["airplane", "night_stand", "xbox"]
    pts, label = ds[ds.sample_ids.index("23_0001.ply")]
    assert label == 23
    expected = apply_up_axis(normalize_unit_sphere(_cloud(50, 1)), "z")  # every point, the ModelNet rotation
    assert pts.shape == (50, 3) and np.allclose(pts, expected, atol=1e-5)
    with pytest.raises(DatasetError, match="test samples only"):
        open_dataset(tmp_path, split="train")
    _write_ply(tmp_path / "40_y.ply", _cloud(10, 4))
    with pytest.raises(DatasetError, match="label index 40 out of range"):
        open_dataset(tmp_path, "modelnet40-ply", "test")


def test_unrecognised_layout_names_what_was_looked_for(tmp_path):
    (tmp_path / "notes.md").write_text("nothing here")
    with pytest.raises(DatasetError, match="unrecognised dataset layout; looked for: c2p synth"):
        open_dataset(tmp_path)
    with pytest.raises(DatasetError, match="no such folder"):
        open_dataset(tmp_path / "missing")
    with pytest.raises(UsageError, match="dataset must be one of"):
        open_dataset(tmp_path, kind="imagenet")
    with pytest.raises(UsageError, match="variant does not apply to folder"):
        _write_npy_folder(tmp_path, ["x"], 2)
        open_dataset(tmp_path, kind="folder", variant="obj_bg")


def test_bad_file_in_a_folder_is_skipped_and_reported(tmp_path):
    _write_npy_folder(tmp_path / "train", ["a", "b"], 2)
    (tmp_path / "test").mkdir()
    (tmp_path / "train" / "a" / "broken.ply").write_text("ply\nformat ascii 1.0\nelement vertex 5\n")
    ds = open_dataset(tmp_path, split="train", n_points=8)
    assert len(ds) == 5
    ok, skipped = read_samples(ds, range(len(ds)))
    assert len(ok) == 4
    assert len(skipped) == 1 and skipped[0]["id"] == "train/a/broken.ply"
    assert "broken.ply" in skipped[0]["error"]


def test_fingerprint_follows_the_file(tmp_path):
    _write_npy_folder(tmp_path, ["a", "b"], 2)
    ds = open_dataset(tmp_path, "folder", "train", test_fraction=0.0)
    before = ds.fingerprint(0)
    path = tmp_path / ds.sample_ids[0]
    np.save(path, _cloud(41, 99))
    os.utime(path, ns=(1, 1))
    assert ds.fingerprint(0) != before
    assert ds.fingerprint(0).startswith(ds.sample_ids[0] + ":")


def test_sample_shots_is_seeded_and_per_class():
    targets = [0] * 10 + [1] * 20 + [2] * 3
    labels = ["a", "b", "c"]
    s = sample_shots(targets, labels, shots=4, seed=7, val_fraction=0.25)
    again = sample_shots(targets, labels, shots=4, seed=7, val_fraction=0.25)
    assert (s.train, s.val) == (again.train, again.val)
    other = sample_shots(targets, labels, shots=4, seed=8, val_fraction=0.25)
    assert (s.train, s.val) != (other.train, other.val)
    t = np.asarray(targets)
    assert np.bincount(t[s.train], minlength=3).tolist() == [3, 3, 2]
    assert np.bincount(t[s.val], minlength=3).tolist() == [1, 1, 1]
    assert not set(s.train) & set(s.val)
    assert s.short_classes == {"c": 3}
    no_val = sample_shots(targets, labels, shots=4, seed=7)
    assert no_val.val == [] and sorted(no_val.train) == s.all
    with pytest.raises(DatasetError, match="no training samples for class"):
        sample_shots([0, 0], ["a", "b"], shots=1)
    with pytest.raises(UsageError):
        sample_shots(targets, labels, shots=0)


def test_sample_shots_replaces_unusable_draws_from_the_same_class():
    targets = [0] * 6 + [1] * 6
    plain = sample_shots(targets, ["a", "b"], shots=3, seed=1, val_fraction=0.34)
    bad = {plain.train[0], plain.val[0]}  # one drawn shot of each kind is unreadable
    asked = []

    def usable(i):
        asked.append(i)
        return i not in bad

    s = sample_shots(targets, ["a", "b"], shots=3, seed=1, val_fraction=0.34, usable=usable)
    assert not set(s.all) & bad and len(s.all) == 6 and s.short_classes == {}
    t = np.asarray(targets)
    assert np.bincount(t[s.all], minlength=2).tolist() == [3, 3]
    # The readable draws stay, and the same unusable files give the same replacements.
    assert set(plain.all) - bad <= set(s.all)
    assert sample_shots(targets, ["a", "b"], shots=3, seed=1, val_fraction=0.34, usable=lambda i: i not in bad) == s
    # A class that cannot fill its shots reports how many usable ones it had.
    short = sample_shots(targets, ["a", "b"], shots=3, seed=1, usable=lambda i: i not in range(1, 6))
    assert short.short_classes == {"a": 1} and np.bincount(t[short.train], minlength=2).tolist() == [1, 3]


def test_a_resampled_dataset_draws_new_points_for_the_same_samples(tmp_path):
    from clip2point.training.point_dataset import resampled

    _write_npy_folder(tmp_path, ["a", "b"], 2)
    ds = open_dataset(tmp_path, "folder", "train", n_points=16, test_fraction=0.0)
    again = resampled(ds, 1)
    assert resampled(ds, 0) is ds and again.sample_ids == ds.sample_ids and again.targets == ds.targets
    assert not np.array_equal(again[0][0], ds[0][0])
    assert np.array_equal(again[0][0], resampled(ds, 1)[0][0])  # deterministic per (seed, r)
    assert not np.array_equal(resampled(ds, 2)[0][0], again[0][0])
    assert ds.seed == 0  # the original is untouched
