"""Labelled point-cloud datasets on disk, their layout detection, and seeded k-shot sampling.

Every dataset class reads one split ("train" or "test") of one layout and yields
`(points float32 [n, 3], label index)`; points are subsampled, turned y-up and scaled into the unit
sphere exactly like `clip2point.io.read_cloud` does for a single file. Each sample has a stable id
(`sample_ids[i]`: a path relative to the root, or "file.h5:index") and a fingerprint (id + file
size + modification time) that feature caches are keyed by.

Bad input policy:
- A layout that is not what the class expects raises `DatasetError` at construction, naming the
  root and what was looked for.
- One unreadable sample raises `InputFileError` (naming the file) from `__getitem__`, and only for
  that sample: callers (`clip2point.training.features`, `c2p eval`) skip it, record the message, and report
  the list, so one broken file never loses the rest of the dataset.

Up axes of the ModelNet releases (PAPER_NOTES sec. 6): the h5 and normal_resampled releases are
y-up (PointNet / PointNet++ rotate them about y), the .off meshes and ModelNet40_Ply are z-up and
get the ModelNet rotation `points @ Rx(+90) @ Ry(-90)`.

Per-sample randomness (random subsampling, FPS start, mesh surface samples) is seeded from
(seed, sample id), so a sample's points do not depend on which other files exist.

Layouts (`open_dataset(root, kind="auto")` recognises them, in this order):
- `synth`: `ROOT/synth.json`, `ROOT/classes.txt`, `ROOT/{train,test}/<class>/<class>_0001.<ext>`
  (`c2p synth`; z-up).
- `modelnet-h5`: `modelnet40_ply_hdf5_2048`: `ply_data_{train,test}N.h5` (`data` N x 2048 x 3,
  `label` N x 1) and `shape_names.txt` (y-up: not rotated).
- `modelnet-resampled`: `modelnet40_normal_resampled`: `<class>/<class>_NNNN.txt` (x,y,z,nx,ny,nz),
  `modelnet40_shape_names.txt` (or modelnet10_...), `modelnet40_{train,test}.txt` (y-up: not rotated).
- `scanobjectnn`: `{training,test}_objectdataset[_augmentedrot_scale75].h5` in the root, or in
  `main_split/` / `main_split_nobg/` below it; variants obj_bg, obj_only, pb_t50_rs (not rotated:
  up = y; the 2048 stored points are normalised, then farthest-point-sampled from the first point
  to 1024 and not normalised again, as the official zeroshot.py does with pointnet2_ops).
- `modelnet40-ply`: `ModelNet40_Ply`, the authors' fixed test samples behind the paper's 49.38%:
  a flat folder of `<label index>_<anything>.ply` (index into ModelNet40's 40 classes; z-up, the
  ModelNet rotation; test split only).
- `modelnet`: ModelNet40 / ModelNet10 meshes `ROOT/<class>/{train,test}/*.off` (z-up).
- `folder`: folder per class, either `ROOT/{train,test}/<class>/*` or `ROOT/<class>/*` split with a
  seeded ratio; any format `clip2point.io` reads; the up axis is the user's choice.

Image-depth pairs for pre-training (CLIP2Point's rendered layout and this project's own) are read
by `clip2point.training.pairs`; `open_pairs` and `PretrainSamples` are re-exported here so every data reader
can be found from this module.
"""

from __future__ import annotations

import inspect
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clip2point import defaults, option_table
from clip2point.errors import DatasetError, InputFileError, Opt, OptionError, UsageError
from clip2point.io import SUPPORTED_EXTENSIONS, normalize_unit_sphere, read_cloud, read_points, subsample
from clip2point.views import apply_up_axis

SPLITS = ("train", "test")
KINDS = option_table.choices("dataset")
# Other names users reach for; they select the same readers.
KIND_ALIASES = option_table.DATASET_ALIASES
SCANOBJECTNN_VARIANTS = option_table.choices("variant")
# Class order of ScanObjectNN's label indices (its shape_names.txt; the h5 files store only indices).
SCANOBJECTNN_LABELS = (
    "bag", "bin", "box", "cabinet", "chair", "desk", "display", "door",
    "shelf", "table", "bed", "pillow", "sink", "sofa", "toilet",
)  # fmt: skip


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise UsageError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return split


def sample_seed(seed: int, sample_id: str) -> int:
    """The seed of one sample's randomness, from the run seed and the sample's stable id."""
    return (int(seed) * 1_000_003 + zlib.crc32(sample_id.encode())) % (2**63)


def _usable_points(points: np.ndarray) -> np.ndarray:
    """The finite points of a cloud as float64; ValueError when none are left or they all coincide."""
    pts = np.asarray(points, dtype=np.float64)
    pts = pts[np.isfinite(pts).all(axis=1)]
    if len(pts) == 0:
        raise ValueError("no finite points")
    if not np.any(np.ptp(pts, axis=0) > 0):
        raise ValueError("all points coincide (zero extent)")
    return pts


def prepare_points(points: np.ndarray, n_points: int, sampling: str, seed: int, up: str) -> np.ndarray:
    """Subsample an in-memory cloud and normalise it like `io.read_cloud` does a file."""
    pts = _usable_points(points)
    pts = subsample(pts, n_points, sampling, np.random.default_rng(seed))
    return normalize_unit_sphere(apply_up_axis(pts.astype(np.float32), up))


def resampled(dataset: PointDataset, r: int) -> PointDataset:
    """The dataset with every sample's randomness (subset, FPS start, mesh surface samples) drawn
    anew: resample r of a few-shot run's per-epoch resampling (r = 0 is the dataset itself)."""
    if r == 0:
        return dataset
    import copy

    out = copy.copy(dataset)
    out.seed = int(zlib.crc32(f"resample:{dataset.seed}:{r}".encode()))
    return out


def _file_stat(path: Path) -> str:
    try:
        st = path.stat()
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


class PointDataset:
    """Base class: `labels`, `sample_ids`, `targets` (label index per sample), `len`, `[i]`."""

    kind: str = ""
    default_up: str = defaults.UP_AXIS
    default_sampling: str = "random"
    # Reading limits for files (max_points, bin_columns of clip2point.io.read_cloud); set by open_dataset.
    read_limits: dict = {}

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        n_points: int = defaults.NUM_POINTS,
        sampling: str | None = None,
        seed: int = 0,
        up: str | None = None,
    ):
        self.root = Path(root)
        self.split = _check_split(split)
        if n_points < 1:
            raise UsageError(f"the number of points must be at least 1, got {n_points}")
        self.n_points = int(n_points)
        self.sampling = sampling or self.default_sampling
        self.seed = int(seed)
        self.up = up or self.default_up
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: no such folder")
        self.labels: list[str] = []
        self.sample_ids: list[str] = []
        self.targets: list[int] = []

    def __len__(self) -> int:
        return len(self.sample_ids)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        raise NotImplementedError

    def fingerprint(self, i: int) -> str:
        """Sample id plus the size and mtime of the file it comes from: changes when the data does."""
        raise NotImplementedError

    def describe(self) -> dict:
        """What a run config or report records about this dataset."""
        counts = np.bincount(np.asarray(self.targets, dtype=np.int64), minlength=len(self.labels))
        return {
            "kind": self.kind,
            "root": str(self.root),
            "split": self.split,
            "n_points": self.n_points,
            "sampling": self.sampling,
            "seed": self.seed,
            "up": self.up,
            "labels": list(self.labels),
            "size": len(self),
            "per_class": {lab: int(c) for lab, c in zip(self.labels, counts, strict=True)},
        }


class _FileListDataset(PointDataset):
    """Samples that are one file each (`self.files[i]`), read with `io.read_cloud`."""

    def _set_files(self, files: Sequence[Path], targets: Sequence[int]) -> None:
        self.files = list(files)
        self.targets = [int(t) for t in targets]
        self.sample_ids = [f.relative_to(self.root).as_posix() for f in self.files]

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        sid = self.sample_ids[i]
        pts = self._read(self.files[i], sample_seed(self.seed, sid))
        return pts, self.targets[i]

    def _read(self, path: Path, seed: int) -> np.ndarray:
        return read_cloud(path, self.n_points, self.sampling, seed, self.up, **self.read_limits)

    def fingerprint(self, i: int) -> str:
        return f"{self.sample_ids[i]}:{_file_stat(self.files[i])}"


def _class_files(folder: Path) -> list[Path]:
    return sorted(
        f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in SUPPORTED_EXTENSIONS
    )


def _subdirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _has_class_files(folder: Path) -> bool:
    return folder.is_dir() and any(_class_files(d) for d in _subdirs(folder))


class FolderDataset(_FileListDataset):
    """One folder per class: `ROOT/{train,test}/<class>/*`, or `ROOT/<class>/*` split by a seeded ratio.

    Without split folders, each file is assigned on its own: it is a test file when
    crc32(f"{split_seed}:{relative path}") / 2**32 < `test_fraction`. Adding or removing files
    therefore never moves the other files between the splits (training shots cannot leak into a
    later test split). A class with two or more files keeps at least one test and one training
    file (the files with the lowest / highest hash); only then can a new file change an old one's side.
    """

    kind = "folder"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        n_points: int = defaults.NUM_POINTS,
        sampling: str | None = None,
        seed: int = 0,
        up: str | None = None,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        labels: Sequence[str] | None = None,
    ):
        super().__init__(root, split, n_points, sampling, seed, up)
        if not 0.0 <= test_fraction < 1.0:
            raise UsageError(f"the test fraction must be in [0, 1), got {test_fraction}")
        self.test_fraction = test_fraction
        # A "train" or "test" folder with class folders inside means split folders (the other may be absent).
        has_splits = any(_has_class_files(self.root / s) for s in SPLITS)
        base = self.root / split if has_splits else self.root
        if has_splits and not base.is_dir():
            raise DatasetError(f"{self.root}: has split folders but no {split}/ folder")
        class_dirs = [d for d in _subdirs(base) if _class_files(d)]
        if not class_dirs:
            where = f"{base}/<class>/" if has_splits else f"{self.root}/<class>/ or {self.root}/{{train,test}}/<class>/"
            raise DatasetError(
                f"{self.root}: no class folders with point-cloud or mesh files found (looked for {where}"
                f"*{{{','.join(SUPPORTED_EXTENSIONS)}}})"
            )
        if labels is None:
            if has_splits:
                # The class list is the union over both splits, so label indices agree between them.
                names = {d.name for s in SPLITS if (self.root / s).is_dir() for d in _subdirs(self.root / s) if _class_files(d)}
                labels = sorted(names)
            else:
                labels = [d.name for d in class_dirs]
        self.labels = list(labels)
        index = {name: i for i, name in enumerate(self.labels)}
        files, targets = [], []
        for d in class_dirs:
            if d.name not in index:
                raise DatasetError(f"{d}: class folder {d.name!r} is not in the class list {self.labels}")
            found = _class_files(d)
            if not has_splits:
                found = self._ratio_split(found, split_seed)
            files += found
            targets += [index[d.name]] * len(found)
        self.has_split_folders = has_splits
        self._set_files(files, targets)

    def _ratio_split(self, files: list[Path], split_seed: int) -> list[Path]:
        score = {f: zlib.crc32(f"{split_seed}:{f.relative_to(self.root).as_posix()}".encode()) / 2**32 for f in files}
        test = {f for f in files if score[f] < self.test_fraction}
        if self.test_fraction > 0 and len(files) >= 2:
            if not test:
                test = {min(files, key=score.__getitem__)}
            elif len(test) == len(files):
                test.discard(max(files, key=score.__getitem__))
        return [f for f in files if (f in test) == (self.split == "test")]

    def describe(self) -> dict:
        out = super().describe()
        if not self.has_split_folders:
            out["test_fraction"] = self.test_fraction
        return out


class SynthDataset(FolderDataset):
    """The synthetic shapes of `c2p synth`: class order from classes.txt; z-up."""

    kind = "synth"

    def __init__(self, root: str | Path, split: str = "train", **kw):
        root = Path(root)
        classes_txt = root / "classes.txt"
        if not (root / "synth.json").is_file() or not classes_txt.is_file():
            raise DatasetError(f"{root}: not a c2p synth dataset (looked for synth.json and classes.txt)")
        labels = [ln.strip() for ln in classes_txt.read_text().splitlines() if ln.strip()]
        if not (root / split).is_dir():
            raise DatasetError(f"{root}: synthetic dataset has no {split}/ folder")
        super().__init__(root, split, labels=labels, **kw)


class ModelNetMeshDataset(_FileListDataset):
    """ModelNet40 / ModelNet10 meshes: `ROOT/<class>/{train,test}/<class>_NNNN.off` (z-up)."""

    kind = "modelnet"

    def __init__(self, root: str | Path, split: str = "train", n_points: int = defaults.NUM_POINTS,
                 sampling: str | None = None, seed: int = 0, up: str | None = None):
        super().__init__(root, split, n_points, sampling, seed, up)
        class_dirs = [d for d in _subdirs(self.root) if (d / "train").is_dir() or (d / "test").is_dir()]
        if not class_dirs:
            raise DatasetError(f"{self.root}: not a ModelNet mesh folder (looked for <class>/train/ and <class>/test/)")
        self.labels = [d.name for d in class_dirs]
        files, targets = [], []
        for i, d in enumerate(class_dirs):
            if (d / split).is_dir():
                found = _class_files(d / split)
                files += found
                targets += [i] * len(found)
        if not files:
            raise DatasetError(f"{self.root}: no files in any <class>/{split}/ folder")
        self._set_files(files, targets)


def _read_names(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


class ModelNetResampledDataset(_FileListDataset):
    """`modelnet40_normal_resampled`: comma-separated x,y,z,nx,ny,nz text files with split lists
    (y-up, like the h5 release: PointNet++ rotates it about y; so no ModelNet rotation)."""

    kind = "modelnet-resampled"
    default_up = "y"

    def __init__(self, root: str | Path, split: str = "train", n_points: int = defaults.NUM_POINTS,
                 sampling: str | None = None, seed: int = 0, up: str | None = None):
        super().__init__(root, split, n_points, sampling, seed, up)
        prefix = _resampled_prefix(self.root)
        if prefix is None:
            raise DatasetError(
                f"{self.root}: not a modelnet40_normal_resampled folder (looked for modelnet40_shape_names.txt "
                "or modelnet10_shape_names.txt)"
            )
        self.labels = _read_names(self.root / f"{prefix}_shape_names.txt")
        list_file = self.root / f"{prefix}_{split}.txt"
        if not list_file.is_file():
            raise DatasetError(f"{self.root}: missing split list {list_file.name}")
        index = {name: i for i, name in enumerate(self.labels)}
        files, targets = [], []
        for name in _read_names(list_file):
            # "night_stand_0001" -> class "night_stand": the class is everything before the last "_".
            cls = name.rsplit("_", 1)[0]
            if cls not in index:
                raise DatasetError(f"{list_file}: entry {name!r} names class {cls!r}, not in {prefix}_shape_names.txt")
            files.append(self.root / cls / f"{name}.txt")
            targets.append(index[cls])
        self._set_files(files, targets)


def _resampled_prefix(root: Path) -> str | None:
    for prefix in ("modelnet40", "modelnet10"):
        if (root / f"{prefix}_shape_names.txt").is_file():
            return prefix
    return None


@dataclass
class _H5Part:
    path: Path
    start: int
    count: int


class _H5Dataset(PointDataset):
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
        self._stats = {p.path: _file_stat(p.path) for p in self.parts}

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


_H5_NAME = re.compile(r"ply_data_(train|test)(\d+)\.h5$")


class ModelNetH5Dataset(_H5Dataset):
    """`modelnet40_ply_hdf5_2048`: `ply_data_{train,test}N.h5` with `shape_names.txt` (y-up: PointNet
    augments it by rotating about y, its up direction; so no ModelNet rotation)."""

    kind = "modelnet-h5"
    default_up = "y"

    def __init__(self, root: str | Path, split: str = "train", n_points: int = defaults.NUM_POINTS,
                 sampling: str | None = None, seed: int = 0, up: str | None = None):
        super().__init__(root, split, n_points, sampling, seed, up)
        files = sorted(
            (f for f in self.root.iterdir() if (m := _H5_NAME.match(f.name)) and m.group(1) == split),
            key=lambda f: int(_H5_NAME.match(f.name).group(2)),
        )
        if not files:
            raise DatasetError(f"{self.root}: no ply_data_{split}N.h5 files (modelnet40_ply_hdf5_2048 layout)")
        names = self.root / "shape_names.txt"
        if not names.is_file():
            raise DatasetError(f"{self.root}: missing shape_names.txt (the class names of the h5 labels)")
        self.labels = _read_names(names)
        self._load_h5(files)


_SCAN_FILES = {
    "obj_bg": ("main_split", "{split}_objectdataset.h5"),
    "obj_only": ("main_split_nobg", "{split}_objectdataset.h5"),
    "pb_t50_rs": ("main_split", "{split}_objectdataset_augmentedrot_scale75.h5"),
}


class ScanObjectNNDataset(_H5Dataset):
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
        pts = normalize_unit_sphere(_usable_points(points))
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


_PLY_SAMPLE = re.compile(r"^(\d+)_.*\.ply$", re.IGNORECASE)


def _ply_samples(root: Path) -> list[Path]:
    return sorted(f for f in root.iterdir() if f.is_file() and f.suffix.lower() == ".ply")


class ModelNet40PlyDataset(_FileListDataset):
    """`ModelNet40_Ply`: the authors' fixed ModelNet40 test samples (the paper's 49.38% zero-shot).

    A flat folder of `<label index>_<anything>.ply`, the label index into ModelNet40's 40 classes
    (`prompts.MODELNET40`'s order). As the official `ModelNet40Ply` reader: every point of a file
    is used (the files are the fixed samples; `n_points` does not apply), normalised (centre, unit
    sphere) and rendered with the ModelNet rotation (z-up). The set is a test split only.
    """

    kind = "modelnet40-ply"

    def __init__(self, root: str | Path, split: str = "test", n_points: int = defaults.NUM_POINTS,
                 sampling: str | None = None, seed: int = 0, up: str | None = None):
        from clip2point.models.prompts import MODELNET40_FOLDERS

        super().__init__(root, split, n_points, sampling, seed, up)
        if split != "test":
            raise DatasetError(f"{self.root}: ModelNet40_Ply holds test samples only (no {split} split)")
        self.labels = list(MODELNET40_FOLDERS)
        files, targets = [], []
        for f in _ply_samples(self.root):
            m = _PLY_SAMPLE.match(f.name)
            if m is None:
                raise DatasetError(f"{f}: not named <label index>_<anything>.ply (ModelNet40_Ply layout)")
            label = int(m.group(1))
            if label >= len(self.labels):
                raise DatasetError(f"{f}: label index {label} out of range for ModelNet40's {len(self.labels)} classes")
            files.append(f)
            targets.append(label)
        if not files:
            raise DatasetError(f"{self.root}: no <label index>_<anything>.ply files (ModelNet40_Ply layout)")
        self._set_files(files, targets)

    def _read(self, path: Path, seed: int) -> np.ndarray:
        pts = read_points(path, **self.read_limits).astype(np.float64)
        pts = pts[np.isfinite(pts).all(axis=1)]
        if len(pts) == 0:
            raise InputFileError(path, "no finite points")
        if not np.any(np.ptp(pts, axis=0) > 0):
            raise InputFileError(path, "all points coincide (zero extent)")
        return apply_up_axis(normalize_unit_sphere(pts), self.up)

    def describe(self) -> dict:
        return {**super().describe(), "all_points": True, "sampling": None}


_READERS: dict[str, type[PointDataset]] = {
    "synth": SynthDataset,
    "modelnet": ModelNetMeshDataset,
    "modelnet-h5": ModelNetH5Dataset,
    "modelnet-resampled": ModelNetResampledDataset,
    "modelnet40-ply": ModelNet40PlyDataset,
    "scanobjectnn": ScanObjectNNDataset,
    "folder": FolderDataset,
}


def detect_layout(root: str | Path) -> str:
    """The dataset kind of a folder; `DatasetError` listing the layouts looked for when none fits."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder")
    names = {p.name for p in root.iterdir()}
    if "synth.json" in names and "classes.txt" in names:
        return "synth"
    if any(_H5_NAME.match(n) for n in names):
        return "modelnet-h5"
    if _resampled_prefix(root) is not None:
        return "modelnet-resampled"
    scan_dirs = [root, root / "main_split", root / "main_split_nobg"]
    if any(d.is_dir() and any(f.name.startswith("training_objectdataset") for f in d.glob("*.h5")) for d in scan_dirs):
        return "scanobjectnn"
    subdirs = _subdirs(root)
    plys = _ply_samples(root)
    if plys and all(_PLY_SAMPLE.match(f.name) for f in plys) and not any(_class_files(d) for d in subdirs):
        return "modelnet40-ply"
    if any((d / s).is_dir() and _class_files(d / s) for d in subdirs for s in SPLITS):
        return "modelnet"
    if any(_has_class_files(root / s) for s in SPLITS) or any(_class_files(d) for d in subdirs):
        return "folder"
    raise DatasetError(
        f"{root}: unrecognised dataset layout; looked for: c2p synth (synth.json + classes.txt), "
        "modelnet40_ply_hdf5_2048 (ply_data_train0.h5 + shape_names.txt), modelnet40_normal_resampled "
        "(modelnet40_shape_names.txt), ScanObjectNN (training_objectdataset*.h5), ModelNet40_Ply "
        "(<label index>_*.ply), ModelNet meshes "
        "(<class>/train/*.off), folder per class (<class>/* or train|test/<class>/*)"
    )


def open_dataset(root: str | Path, kind: str = "auto", split: str = "train", **kw) -> PointDataset:
    """Open one split of a dataset; `kind="auto"` detects the layout (see the module docstring).

    Keyword arguments go to the dataset class: n_points, sampling, seed, up, and, per kind,
    test_fraction / split_seed (folder), variant (scanobjectnn). Options a kind does not take are
    dropped when they are None.
    """
    limits = {k: v for k in ("max_points", "bin_columns") if (v := kw.pop(k, None)) is not None}
    kind = KIND_ALIASES.get(kind, kind)
    if kind not in KINDS:
        raise OptionError(Opt("dataset"), f" must be one of {', '.join(KINDS + tuple(KIND_ALIASES))}, got {kind!r}")
    if kind == "auto":
        kind = detect_layout(root)
    cls = _READERS[kind]
    accepted = set(inspect.signature(cls.__init__).parameters) | (
        set(inspect.signature(FolderDataset.__init__).parameters) if cls is SynthDataset else set()
    )
    for key in list(kw):
        if key not in accepted:
            if kw[key] is None:
                del kw[key]
            else:
                raise UsageError(f"option {key.replace('_', '-')} does not apply to {kind} datasets")
    if limits:
        from clip2point.io import check_read_limits

        check_read_limits(limits.get("max_points", defaults.MAX_POINTS), limits.get("bin_columns", defaults.BIN_COLUMNS))
    ds = cls(root, split, **kw)
    if limits:
        ds.read_limits = limits
    return ds


# ---------------------------------------------------------------------------------------------
# k-shot sampling
# ---------------------------------------------------------------------------------------------


@dataclass
class ShotSplit:
    """Indices into a dataset: the k shots, divided into a training part and a validation part."""

    train: list[int]
    val: list[int]
    short_classes: dict[str, int]  # classes with fewer samples than requested shots -> how many they had

    @property
    def all(self) -> list[int]:
        return sorted(self.train + self.val)


def sample_shots(
    targets: Sequence[int],
    labels: Sequence[str],
    shots: int,
    seed: int = 0,
    val_fraction: float = 0.0,
    usable: Callable[[int], bool] | None = None,
) -> ShotSplit:
    """Seeded k-shot sampling: `shots` samples per class (all of a class that has fewer), and of each
    class's shots `round(val_fraction * k)` (at least 1 when val_fraction > 0 and k >= 2) held out
    for validation. Depends only on (targets, shots, seed, val_fraction) and, with `usable`, on
    which samples it accepts. A class without any sample raises `DatasetError`.

    Each class's members are visited in a seeded random order; `usable(i)` (e.g. "the file reads")
    is asked of each in turn until `shots` are accepted, so a rejected draw is replaced by the
    class's next member in that order rather than costing the class a shot. `short_classes` then
    counts the accepted samples of a class that could not fill its shots.
    """
    if shots < 1:
        raise OptionError(Opt("shots"), f" must be at least 1, got {shots}")
    if not 0.0 <= val_fraction < 1.0:
        raise UsageError(f"the validation fraction must be in [0, 1), got {val_fraction}")
    t = np.asarray(targets, dtype=np.int64)
    rng = np.random.default_rng(seed)
    train, val, short = [], [], {}
    empty = [labels[c] for c in range(len(labels)) if not (t == c).any()]
    if empty:
        raise DatasetError(f"no training samples for class(es): {', '.join(empty)}")
    for c in range(len(labels)):
        order = rng.permutation(np.flatnonzero(t == c)).tolist()
        if usable is None:
            chosen = order[:shots]
        else:
            chosen = []
            for i in order:
                if len(chosen) == shots:
                    break
                if usable(i):
                    chosen.append(i)
        k = len(chosen)
        if k < shots:
            short[labels[c]] = k
        n_val = 0
        if val_fraction > 0 and k >= 2:
            n_val = min(k - 1, max(1, int(round(val_fraction * k))))
        val += chosen[:n_val]
        train += chosen[n_val:]
    return ShotSplit(sorted(train), sorted(val), short)


from .pairs import PairsIndex, PretrainSamples, open_pairs  # noqa: E402, F401  (re-export, see the docstring)
