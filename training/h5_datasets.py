"""Datasets stored as h5 arrays: ModelNet40's `modelnet40_ply_hdf5_2048` release and ScanObjectNN.

Both hold `data` [N, P, 3] (+ `label` [N] or [N, 1]) per file, checked (`_h5_arrays`) before
use. Up axes: y (not rotated), as PointNet and the official zeroshot.py use them. ScanObjectNN's
2048 stored points are normalised, then farthest-point-sampled from the first point
(`farthest_points_from_first`, pointnet2_ops' order).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clip2point import defaults, option_table
from clip2point.errors import DatasetError, InputFileError, UsageError
from clip2point.io import normalize_unit_sphere, subsample
from clip2point.views import apply_up_axis

from .point_dataset import PointDataset, file_stat, prepare_points, read_names, sample_seed, usable_points

SCANOBJECTNN_VARIANTS = option_table.choices("variant")
# Class order of ScanObjectNN's label indices (its shape_names.txt; the h5 files store only indices).
SCANOBJECTNN_LABELS = (
    "bag", "bin", "box", "cabinet", "chair", "desk", "display", "door",
    "shelf", "table", "bed", "pillow", "sink", "sofa", "toilet",
)  # fmt: skip


@dataclass
class _H5Part:
    path: Path
    start: int
    count: int


class H5Dataset(PointDataset):
    """Clouds stored as `data` [N, P, 3] (+ `label` [N] or [N, 1]) in one or more h5 files."""

    def _load_h5(self, paths: Sequence[Path]) -> None:
        import h5py

        self.parts: list[_H5Part] = []
        datas, targets, ids = [], [], []
        for path in paths:
            try:
                with h5py.File(path, "r") as f:
                    data, label = _h5_arrays(path, f, len(self.labels))
            except DatasetError:
                raise
            except OSError as e:
                raise DatasetError(f"{path}: not a readable h5 file ({e})") from e
            name = path.relative_to(self.root).as_posix()
            self.parts.append(_H5Part(path, len(ids), len(data)))
            datas.append(data[:, :, :3].astype(np.float32, copy=False))
            targets += label.astype(np.int64).tolist()
            ids += [f"{name}:{i}" for i in range(len(data))]
        self._data = np.concatenate(datas) if datas else np.zeros((0, 1, 3), np.float32)
        self.targets = targets
        self.sample_ids = ids
        self._stats = {p.path: file_stat(p.path) for p in self.parts}

    def _prepare(self, points: np.ndarray, seed: int) -> np.ndarray:
        return prepare_points(points, self.n_points, self.sampling, seed, self.up)

    def _part(self, i: int) -> _H5Part:
        return next(p for p in self.parts if p.start <= i < p.start + p.count)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        sid = self.sample_ids[i]
        try:
            pts = self._prepare(self._data[i], sample_seed(self.seed, sid))
        except ValueError as e:
            raise InputFileError(self._part(i).path, f"sample {sid.rsplit(':', 1)[1]}: {e}") from None
        return pts, self.targets[i]

    def fingerprint(self, i: int) -> str:
        return f"{self.sample_ids[i]}:{self._stats[self._part(i).path]}"


def _h5_arrays(path: Path, f, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """`data` [N, P, 3+] float and `label` [N] int64 of an open h5 file, or `DatasetError` naming the
    file and what is wrong (a group, text or non-integer labels, channel-first points, wrong shapes)."""
    import h5py

    found = list(f.keys())
    if "data" not in f or "label" not in f:
        raise DatasetError(f"{path}: h5 file without 'data' and 'label' datasets (has {found})")
    for name in ("data", "label"):
        if not isinstance(f[name], h5py.Dataset):
            raise DatasetError(f"{path}: '{name}' is an h5 group, not a dataset (the file has {found})")
    data, label = f["data"][...], f["label"][...]
    for name, arr in (("data", data), ("label", label)):
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise DatasetError(f"{path}: '{name}' holds {arr.dtype} values; need numbers")
    if data.ndim == 3 and data.shape[1] in (3, 6) and data.shape[2] > data.shape[1]:
        raise DatasetError(
            f"{path}: 'data' has shape {data.shape}, which looks channel-first (N x {data.shape[1]} x P); "
            "need N x P x 3 (transpose the last two axes)"
        )
    if data.ndim != 3 or data.shape[2] < 3:
        raise DatasetError(f"{path}: 'data' has shape {data.shape}; need N x P x 3")
    n = len(data)
    if label.shape not in ((n,), (n, 1)):
        raise DatasetError(f"{path}: 'label' has shape {label.shape}; need {n} or {n} x 1 for {n} clouds")
    label = label.reshape(-1)
    values = label.astype(np.float64)
    if not np.isfinite(values).all() or (values != np.round(values)).any():
        bad = values[~np.isfinite(values) | (values != np.round(values))][0]
        raise DatasetError(f"{path}: 'label' holds {bad}, not a class index (need whole numbers)")
    bad = (values < 0) | (values >= n_labels)
    if bad.any():
        raise DatasetError(f"{path}: label {int(values[bad][0])} out of range for {n_labels} classes")
    return data, label.astype(np.int64)


H5_NAME = re.compile(r"ply_data_(train|test)(\d+)\.h5$")


class ModelNetH5Dataset(H5Dataset):
    """`modelnet40_ply_hdf5_2048`: `ply_data_{train,test}N.h5` with `shape_names.txt` (y-up: PointNet
    augments it by rotating about y, its up direction; so no ModelNet rotation)."""

    kind = "modelnet-h5"
    default_up = "y"

    def __init__(self, root: str | Path, split: str = "train", n_points: int = defaults.NUM_POINTS,
                 sampling: str | None = None, seed: int = 0, up: str | None = None):
        super().__init__(root, split, n_points, sampling, seed, up)
        files = sorted(
            (f for f in self.root.iterdir() if (m := H5_NAME.match(f.name)) and m.group(1) == split),
            key=lambda f: int(H5_NAME.match(f.name).group(2)),
        )
        if not files:
            raise DatasetError(f"{self.root}: no ply_data_{split}N.h5 files (modelnet40_ply_hdf5_2048 layout)")
        names = self.root / "shape_names.txt"
        if not names.is_file():
            raise DatasetError(f"{self.root}: missing shape_names.txt (the class names of the h5 labels)")
        self.labels = read_names(names)
        self._load_h5(files)


_SCAN_FILES = {
    "obj_bg": ("main_split", "{split}_objectdataset.h5"),
    "obj_only": ("main_split_nobg", "{split}_objectdataset.h5"),
    "pb_t50_rs": ("main_split", "{split}_objectdataset_augmentedrot_scale75.h5"),
}


class ScanObjectNNDataset(H5Dataset):
    """ScanObjectNN h5 files (15 classes), variant obj_bg, obj_only or pb_t50_rs.

    The root may be the release's `h5_files/` folder (holding main_split/ and main_split_nobg/) or
    one of those folders itself; a root named main_split_nobg implies obj_only. Not rotated
    (up = y). As the official zeroshot.py: the 2048 stored points are normalised (centre, unit
    sphere), then farthest-point-sampled to `n_points` starting from the first stored point (what
    pointnet2_ops' furthest_point_sample does), and not normalised again.
    """

    kind = "scanobjectnn"
    default_up = "y"
    default_sampling = "fps"

    def __init__(self, root: str | Path, split: str = "train", n_points: int = defaults.NUM_POINTS,
                 sampling: str | None = None, seed: int = 0, up: str | None = None,
                 variant: str | None = None):
        super().__init__(root, split, n_points, sampling, seed, up)
        if variant is None:
            variant = "obj_only" if self.root.name == "main_split_nobg" else "obj_bg"
        if variant not in SCANOBJECTNN_VARIANTS:
            raise UsageError(f"ScanObjectNN variant must be one of {', '.join(SCANOBJECTNN_VARIANTS)}, got {variant!r}")
        self.variant = variant
        folder, pattern = _SCAN_FILES[variant]
        name = pattern.format(split="training" if split == "train" else "test")
        candidates = [self.root / folder / name, self.root / name]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            raise DatasetError(
                f"{self.root}: ScanObjectNN {variant} {split} file not found (looked for "
                f"{', '.join(str(c.relative_to(self.root)) for c in candidates)})"
            )
        self.labels = list(SCANOBJECTNN_LABELS)
        self._load_h5([path])

    def _prepare(self, points: np.ndarray, seed: int) -> np.ndarray:
        pts = normalize_unit_sphere(usable_points(points))
        if self.sampling == "fps":
            pts = farthest_points_from_first(pts, self.n_points)
        else:
            pts = subsample(pts, self.n_points, self.sampling, np.random.default_rng(seed))
        return apply_up_axis(pts, self.up)

    def describe(self) -> dict:
        return {**super().describe(), "variant": self.variant, "order": "normalise, then sample"}


def farthest_points_from_first(points: np.ndarray, n: int) -> np.ndarray:
    """`n` points by farthest point sampling that starts from the first point, as pointnet2_ops'
    `furthest_point_sample` does (float32 squared distances, the first farthest point on ties)."""
    pts = np.asarray(points, dtype=np.float32)
    if len(pts) <= n:
        return pts
    chosen = np.empty(n, dtype=np.int64)
    chosen[0] = 0
    min_d = np.full(len(pts), np.inf, dtype=np.float32)
    for i in range(1, n):
        d = ((pts - pts[chosen[i - 1]]) ** 2).sum(axis=1, dtype=np.float32)
        np.minimum(min_d, d, out=min_d)
        chosen[i] = int(np.argmax(min_d))
    return pts[chosen]
