"""Batched classification of files: worker processes read and sample files while the model runs.

A file that cannot be used becomes a result with an error; it never costs the rest of the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import C2PError, UsageError


@dataclass
class FileResult:
    """The outcome for one input file: a label with probabilities, or the error that stopped it."""

    path: str
    label: str | None = None
    probability: float | None = None
    top_k: list[tuple[str, float]] = field(default_factory=list)
    n_points: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "label": self.label,
            "probability": self.probability,
            "top_k": [{"label": lab, "probability": p} for lab, p in self.top_k],
            "n_points": self.n_points,
            "error": self.error,
        }


@dataclass(frozen=True)
class ReadOptions:
    n_points: int = 1024
    sampling: str = "random"
    seed: int = 0
    up: str = "z"

    def validate(self) -> None:
        if self.n_points < 1:
            raise UsageError(f"--points must be at least 1, got {self.n_points}")
        if self.sampling not in ("random", "fps"):
            raise UsageError(f"--sampling must be random or fps, got {self.sampling!r}")
        if self.up not in ("z", "y"):
            raise UsageError(f"--up must be z or y, got {self.up!r}")


class _FileDataset(torch.utils.data.Dataset):
    """Reads one file per item; errors are returned, not raised, so a batch is never lost."""

    def __init__(self, paths: Sequence[Path], options: ReadOptions):
        self.paths = list(paths)
        self.options = options

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[str, np.ndarray | None, str | None]:
        from .io import read_cloud

        path = self.paths[i]
        o = self.options
        try:
            return str(path), read_cloud(path, n_points=o.n_points, sampling=o.sampling, seed=o.seed, up=o.up), None
        except C2PError as e:
            return str(path), None, str(e)
        except Exception as e:  # an unforeseen reader failure still belongs to this file alone
            return str(path), None, f"{path}: unexpected {type(e).__name__}: {e}"


def gather_inputs(paths: Sequence[str | Path] | str | Path, recursive: bool = False) -> list[Path | FileResult]:
    """Expand files and folders into input files, in the order given; a path that cannot be used
    (missing, unreadable folder) stands in that order as an error result instead."""
    from .io import list_inputs

    if isinstance(paths, (str, Path)):  # one path, not a sequence of one-character paths
        paths = [paths]
    entries: list[Path | FileResult] = []
    for p in paths:
        try:
            entries.extend(list_inputs([Path(p)], recursive=recursive))
        except C2PError as e:
            entries.append(FileResult(path=str(p), error=str(e)))
    return entries


def in_input_order(entries: Sequence[Path | FileResult], classified) -> list[FileResult]:
    """Merge the results of the entries' files (an iterable in file order) back among the entries' errors."""
    classified = iter(classified)
    return [next(classified) if isinstance(e, Path) else e for e in entries]


def _collate(items):
    return items


def pad_clouds(clouds: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack clouds of different sizes into [B, N_max, 3] (zero padding) and their lengths [B]."""
    lengths = torch.tensor([len(c) for c in clouds], dtype=torch.long)
    n_max = int(lengths.max()) if len(clouds) else 0
    padded = torch.zeros(len(clouds), max(n_max, 1), 3, dtype=torch.float32)
    for b, c in enumerate(clouds):
        padded[b, : len(c)] = torch.from_numpy(np.ascontiguousarray(c, dtype=np.float32))
    return padded, lengths


def _results_for(paths: list[str], clouds: list[np.ndarray], probs: torch.Tensor, labels: Sequence[str], top_k: int):
    k = min(top_k, len(labels))
    values, indices = probs.topk(k, dim=1)
    for b, path in enumerate(paths):
        tops = [(labels[int(j)], float(v)) for v, j in zip(values[b], indices[b], strict=True)]
        yield FileResult(path=path, label=tops[0][0], probability=tops[0][1], top_k=tops, n_points=len(clouds[b]))


def classify_files(
    classifier,
    paths: Sequence[str | Path],
    *,
    read: ReadOptions = ReadOptions(),
    batch_size: int = 32,
    top_k: int = 5,
    workers: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[FileResult]:
    """Yield a FileResult per path, in order. `classifier` is a classifier.PointCloudClassifier.

    `workers` processes read and sample files ahead of the model (default: up to 4, one core
    fewer than the machine has); 0 reads in the calling process. `on_progress(n)` is called with the number of files
    finished after each batch.
    """
    read.validate()
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    if top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {top_k}")
    paths = [Path(p) for p in paths]
    if not paths:
        return
    if workers is None:
        import os

        # leave a core to the model: on small machines reader processes otherwise slow the encoder down
        workers = min(4, max(0, (os.cpu_count() or 1) - 1), math.ceil(len(paths) / batch_size))
    loader = torch.utils.data.DataLoader(
        _FileDataset(paths, read),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate,
        prefetch_factor=2 if workers > 0 else None,
    )
    for batch in loader:
        good = [(p, c) for p, c, err in batch if err is None]
        results: dict[str, FileResult] = {}
        if good:
            good_paths, clouds = [p for p, _ in good], [c for _, c in good]
            points, lengths = pad_clouds(clouds)
            probs = classifier.predict(points, lengths).float().cpu()
            for r in _results_for(good_paths, clouds, probs, classifier.labels, top_k):
                results[r.path] = r
        for p, _, err in batch:
            yield results[p] if err is None else FileResult(path=p, error=err)
        if on_progress is not None:
            on_progress(len(batch))


def classify_files_sequential(classifier, paths: Sequence[str | Path], *, read: ReadOptions = ReadOptions(), top_k: int = 5):
    """One file at a time, no workers: the baseline the benchmark compares the pipeline with."""
    for path in paths:
        _, cloud, error = _FileDataset([Path(path)], read)[0]  # same error capture as the workers
        if error is not None:
            yield FileResult(path=str(path), error=error)
            continue
        points, lengths = pad_clouds([cloud])
        probs = classifier.predict(points, lengths).float().cpu()
        yield from _results_for([str(path)], [cloud], probs, classifier.labels, top_k)
