"""Batched classification of files: worker processes read and sample files while the model runs.

A file that cannot be used becomes a result with an error; it never costs the rest of the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from .batching import FileResult, ReadOptions, gather_inputs, in_input_order, pad_clouds, read_one
from .errors import Opt, OptionError

__all__ = ["FileResult", "ReadOptions", "classify_files", "classify_files_sequential", "gather_inputs", "in_input_order"]


class _FileDataset(torch.utils.data.Dataset):
    """Reads one file per item (in a worker process); errors are returned, not raised."""

    def __init__(self, paths: Sequence[Path], options: ReadOptions):
        self.paths = list(paths)
        self.options = options

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[str, np.ndarray | None, str | None]:
        return (str(self.paths[i]), *read_one(self.paths[i], self.options))


def _collate(items):
    return items


def _classify_batch(classifier, batch, top_k: int) -> list[FileResult]:
    """FileResults for [(path, cloud or None, error or None)]: one forward pass over the readable ones."""
    good = [(p, c) for p, c, err in batch if err is None]
    results = iter(())
    if good:
        points, lengths = pad_clouds([c for _, c in good])
        probs = classifier.predict(torch.from_numpy(points), torch.from_numpy(lengths)).float().cpu().numpy()
        results = iter(
            FileResult.from_probabilities(p, row, classifier.labels, top_k, len(c))
            for (p, c), row in zip(good, probs, strict=True)
        )
    return [next(results) if err is None else FileResult(path=p, error=err) for p, _, err in batch]


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
    fewer than the machine has); 0 reads in the calling process. `on_progress(n)` is called with
    the number of files finished after each batch.
    """
    read.validate()
    if batch_size < 1:
        raise OptionError(Opt("batch_size"), f" must be at least 1, got {batch_size}")
    if top_k < 1:
        raise OptionError(Opt("top_k"), f" must be at least 1, got {top_k}")
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
        yield from _classify_batch(classifier, batch, top_k)
        if on_progress is not None:
            on_progress(len(batch))


def classify_files_sequential(classifier, paths: Sequence[str | Path], *, read: ReadOptions = ReadOptions(), top_k: int = 5):
    """One file at a time, no workers: the baseline the benchmark compares the pipeline with."""
    for path in paths:
        yield from _classify_batch(classifier, [(str(path), *read_one(path, read))], top_k)
