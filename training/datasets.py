"""Labelled point-cloud datasets on disk: `open_dataset` detects a folder's layout and opens one split.

Every dataset class reads one split ("train" or "test") of one layout and yields
`(points float32 [n, 3], label index)` (the interface and its per-sample rules:
`clip2point.training.point_dataset`; the h5 releases: `clip2point.training.h5_datasets`). Each
sample has a stable id (`sample_ids[i]`: a path relative to the root, or "file.h5:index") and a
fingerprint (id + file size + modification time) that feature caches are keyed by. k-shot
sampling is `clip2point.training.shots`.

Bad input policy:
- A layout that is not what the class expects raises `DatasetError` at construction, naming the
  root and what was looked for.
- One unreadable sample raises `InputFileError` (naming the file) from `__getitem__`, and only for
  that sample: callers (`clip2point.training.features`, `c2p eval`) skip it, record the message, and report
  the list, so one broken file never loses the rest of the dataset.

Up axes of the ModelNet releases (PAPER_NOTES sec. 6): the h5 and normal_resampled releases are
y-up (PointNet / PointNet++ rotate them about y), the .off meshes and ModelNet40_Ply are z-up and
get the ModelNet rotation `points @ Rx(+90) @ Ry(-90)`.

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
by `clip2point.training.pairs`.
"""

from __future__ import annotations

import inspect
import re
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clip2point import defaults, option_table
from clip2point.errors import DatasetError, InputFileError, Opt, OptionError, UsageError
from clip2point.io import SUPPORTED_EXTENSIONS, normalize_unit_sphere, read_points
from clip2point.views import apply_up_axis

from .h5_datasets import H5_NAME, ModelNetH5Dataset, ScanObjectNNDataset
from .point_dataset import SPLITS, FileListDataset, PointDataset, read_names, usable_points

KINDS = option_table.choices("dataset")
# Other names users reach for; they select the same readers.
KIND_ALIASES = option_table.DATASET_ALIASES


def _class_files(folder: Path) -> list[Path]:
    return sorted(
        f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in SUPPORTED_EXTENSIONS
    )


def _subdirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _has_class_files(folder: Path) -> bool:
    return folder.is_dir() and any(_class_files(d) for d in _subdirs(folder))


class FolderDataset(FileListDataset):
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
        labels = read_names(classes_txt)
        if not (root / split).is_dir():
            raise DatasetError(f"{root}: synthetic dataset has no {split}/ folder")
        super().__init__(root, split, labels=labels, **kw)


class ModelNetMeshDataset(FileListDataset):
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


class ModelNetResampledDataset(FileListDataset):
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
        self.labels = read_names(self.root / f"{prefix}_shape_names.txt")
        list_file = self.root / f"{prefix}_{split}.txt"
        if not list_file.is_file():
            raise DatasetError(f"{self.root}: missing split list {list_file.name}")
        index = {name: i for i, name in enumerate(self.labels)}
        files, targets = [], []
        for name in read_names(list_file):
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


_PLY_SAMPLE = re.compile(r"^(\d+)_.*\.ply$", re.IGNORECASE)


def _ply_samples(root: Path) -> list[Path]:
    return sorted(f for f in root.iterdir() if f.is_file() and f.suffix.lower() == ".ply")


class ModelNet40PlyDataset(FileListDataset):
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
        try:
            pts = usable_points(read_points(path, **self.read_limits))
        except ValueError as e:
            raise InputFileError(path, str(e)) from None
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
    if any(H5_NAME.match(n) for n in names):
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
                raise OptionError(Opt(key), f" does not apply to {kind} datasets")
    if limits:
        from clip2point.io import check_read_limits

        check_read_limits(limits.get("max_points", defaults.MAX_POINTS), limits.get("bin_columns", defaults.BIN_COLUMNS))
    ds = cls(root, split, **kw)
    if limits:
        ds.read_limits = limits
    return ds
