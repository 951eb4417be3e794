"""What every dataset reader of `clip2point.training.datasets` is: `PointDataset` (labels, sample
ids, targets, `[i]` -> (points float32 [n, 3], label index), fingerprints), and the per-sample
rules they share.

Points are subsampled, turned y-up and scaled into the unit sphere exactly like
`clip2point.io.read_cloud` does for a single file. Per-sample randomness (random subsampling, FPS
start, mesh surface samples) is seeded from (seed, sample id), so a sample's points do not depend
on which other files exist. A fingerprint (id + file size + modification time) changes when the
data does: feature caches are keyed by it.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clip2point import defaults
from clip2point.errors import DatasetError, UsageError
from clip2point.io import normalize_unit_sphere, read_cloud, subsample
from clip2point.views import apply_up_axis

SPLITS = ("train", "test")


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise UsageError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return split


def sample_seed(seed: int, sample_id: str) -> int:
    """The seed of one sample's randomness, from the run seed and the sample's stable id."""
    return (int(seed) * 1_000_003 + zlib.crc32(sample_id.encode())) % (2**63)


def usable_points(points: np.ndarray) -> np.ndarray:
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
    pts = usable_points(points)
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


def file_stat(path: Path) -> str:
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


class FileListDataset(PointDataset):
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
        return f"{self.sample_ids[i]}:{file_stat(self.files[i])}"


def read_names(path: Path) -> list[str]:
    """The non-empty lines of a class-name or split list, stripped."""
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
