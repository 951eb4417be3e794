"""Batched classification of files: reader processes read and sample files while the model runs.

A file that cannot be used becomes a result with an error; it never costs the rest of the batch,
and a reader process that crashes (a segfault in a native parser, the OOM killer) costs only the
file it was reading (clip2point.engine.reader_pool).

On CUDA the batch goes through pinned memory with a non-blocking copy, and the results of batch k
are fetched only after batch k+1 has been queued, so the GPU never waits for Python in between.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import Opt, OptionError
from ..models.precision import PRECISIONS
from .batching import FileResult, ReadOptions, gather_inputs, in_input_order, pad_clouds, read_one

__all__ = [
    "FileResult", "ReadOptions", "classify_files", "classify_files_sequential", "default_workers", "gather_inputs",
    "in_input_order", "validate_run_options",
]

READER_NICE_ON_CPU = 10


def default_workers(n_files: int) -> int:
    """Reader processes when none are asked for: one per core this process may use, less one
    left to the model (on 2 cores, readers that take both slow the encoder down), and never
    more than there are files."""
    from ..distributed import cores_per_process

    return max(0, min(cores_per_process() - 1, n_files))


def validate_run_options(batch_size: int = 32, top_k: int = 5, workers: int | None = None, precision: str | None = None) -> None:
    """Bounds of the run options (the limits of clip2point.limits), checked before anything is loaded."""
    from .. import limits

    if batch_size < 1:
        raise OptionError(Opt("batch_size"), f" must be at least 1, got {batch_size}")
    limits.check_range("batch_size", batch_size, 1, limits.MAX_BATCH)
    if top_k < 1:
        raise OptionError(Opt("top_k"), f" must be at least 1, got {top_k}")
    limits.check_workers(workers)
    if precision is not None and precision not in PRECISIONS:
        raise OptionError(Opt("precision"), f" must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def check_precision(precision: str | None, device_type: str, torch_model: bool = True) -> str:
    """The precision a run will use ("auto" resolved; clip2point.models.precision): bf16 needs CUDA or
    a CPU with native bf16, fp16 needs CUDA, and both a torch model (an exported engine keeps its own)."""
    from ..models.precision import resolve_precision

    return resolve_precision(precision, device_type, torch_model)


def _stat(path: Path) -> tuple[int | None, float | None]:
    try:
        st = os.stat(path)
    except OSError:
        return None, None
    return st.st_size, st.st_mtime


def _read_in_process(paths: Sequence[Path], read: ReadOptions) -> Iterator[tuple[np.ndarray | None, str | None]]:
    for p in paths:
        yield read_one(p, read)


def _read_in_pool(paths: Sequence[Path], read: ReadOptions, workers: int, ahead: int, nice: int):
    from .reader_pool import ReaderPool

    with ReaderPool(workers, functools.partial(read_one, options=read), ahead=ahead, nice=nice) as pool:
        for path, (kind, value) in zip(paths, pool.imap(paths), strict=True):
            yield value if kind == "ok" else (None, f"{path}: {value}")


class _Launched:
    """A batch whose forward pass has been queued; `results()` waits for it and builds the FileResults."""

    def __init__(self, batch, good, probs, event=None):
        self.batch, self.good, self.probs, self.event = batch, good, probs, event

    def results(self, labels, top_k: int) -> list[FileResult]:
        rows = iter(())
        if self.good:
            if self.event is not None:
                self.event.synchronize()
            probs = self.probs.numpy() if isinstance(self.probs, torch.Tensor) else np.asarray(self.probs)
            rows = iter(
                FileResult.from_probabilities(p, row, labels, top_k, len(c))
                for (p, c), row in zip(self.good, probs, strict=True)
            )
        out = []
        for p, _, err, (size, mtime) in self.batch:
            r = next(rows) if err is None else FileResult(path=p, error=err)
            r.size, r.mtime = size, mtime
            out.append(r)
        return out


def _device_of(classifier) -> torch.device:
    return torch.device(getattr(classifier, "device", "cpu"))


def _launch(classifier, batch, precision: str | None) -> _Launched:
    """Queue one forward pass over the readable clouds of `batch` [(path, cloud, error, stat)]."""
    good = [(p, c) for p, c, err, _ in batch if err is None]
    if not good:
        return _Launched(batch, good, None)
    points, lengths = pad_clouds([c for _, c in good])
    pts, lens = torch.from_numpy(points), torch.from_numpy(lengths)
    device = _device_of(classifier)
    cuda = device.type == "cuda"
    if cuda:
        pts = pts.pin_memory().to(device, non_blocking=True)
        lens = lens.pin_memory().to(device, non_blocking=True)
    if precision is not None and hasattr(classifier, "head"):
        # Once per classifier (a no-op after the first batch): its encoders run at that precision;
        # the projection stays float32 (clip2point.models.precision).
        from ..models.precision import apply_precision

        apply_precision(classifier, precision)
    with torch.inference_mode():
        probs = classifier.predict(pts, lens).float()
        if cuda and probs.is_cuda:
            host = torch.empty(probs.shape, dtype=torch.float32, pin_memory=True)
            host.copy_(probs, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            return _Launched(batch, good, host, event)
        return _Launched(batch, good, probs.cpu())


def classify_files(
    classifier,
    paths: Sequence[str | Path],
    *,
    read: ReadOptions = ReadOptions(),
    batch_size: int = 32,
    top_k: int = 5,
    workers: int | None = None,
    on_progress: Callable[[int], None] | None = None,
    precision: str | None = None,
) -> Iterator[FileResult]:
    """Yield a FileResult per path, in order. `classifier` is a classifier.PointCloudClassifier.

    `workers` processes read and sample files ahead of the model (default: one per CPU core this
    process may use, less one); 0 reads in the calling process (then a reader crash is a crash of
    the caller). `on_progress(n)` is called with the number of files finished after each batch.
    `precision` (fp32 / bf16 / fp16 / auto, clip2point.models.precision) is applied to the classifier's
    encoders before the first batch (once: the classifier keeps it); None keeps the classifier's own.
    """
    read.validate()
    validate_run_options(batch_size, top_k, workers, precision)
    check_precision(precision, _device_of(classifier).type, isinstance(getattr(classifier, "head", None), torch.nn.Module))
    paths = [Path(p) for p in paths]
    if not paths:
        return
    if workers is None:
        workers = default_workers(len(paths))
    workers = min(workers, len(paths))
    # On CUDA, batch k's results are fetched after batch k+1 is queued; on CPU that would only delay them.
    defer = _device_of(classifier).type == "cuda"
    # On CPU the encoder's threads and the readers share the cores: readers yield to the encoder (a
    # reader descheduled in the middle of a parallel region stalls every encoder thread) and catch
    # up whenever the encoder waits.
    nice = 0 if defer else READER_NICE_ON_CPU
    reads = (
        _read_in_pool(paths, read, workers, ahead=max(2 * batch_size, 2 * workers), nice=nice)
        if workers > 0 else _read_in_process(paths, read)
    )  # fmt: skip
    labels = classifier.labels

    def launches() -> Iterator[_Launched]:
        batch: list = []
        for path, (cloud, err) in zip(paths, reads, strict=True):
            batch.append((str(path), cloud, err, _stat(path)))
            if len(batch) == batch_size:
                yield _launch(classifier, batch, precision)
                batch = []
        if batch:
            yield _launch(classifier, batch, precision)

    pending: _Launched | None = None
    try:
        for launched in launches():
            if pending is not None:
                yield from _finish(pending, labels, top_k, on_progress)
            pending = launched
            if not defer:
                yield from _finish(pending, labels, top_k, on_progress)
                pending = None
        if pending is not None:
            yield from _finish(pending, labels, top_k, on_progress)
    finally:
        reads.close()


def _finish(launched: _Launched, labels, top_k: int, on_progress) -> Iterator[FileResult]:
    results = launched.results(labels, top_k)
    yield from results
    if on_progress is not None:
        on_progress(len(results))


def classify_files_sequential(classifier, paths: Sequence[str | Path], *, read: ReadOptions = ReadOptions(), top_k: int = 5):
    """One file at a time, no workers: the baseline the benchmark compares the pipeline with."""
    for path in paths:
        yield from _launch(classifier, [(str(path), *read_one(path, read), _stat(Path(path)))], None).results(
            classifier.labels, top_k
        )
