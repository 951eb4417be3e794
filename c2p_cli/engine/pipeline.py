"""Batched classification of files: reader processes read and sample files while the model runs.

A file that cannot be used becomes a result with an error; it never costs the rest of the batch,
and a reader process that crashes (a segfault in a native parser, the OOM killer) costs only the
file it was reading (clip2point.engine.reader_pool).

On CUDA the batch goes through pinned memory with a non-blocking copy, and the results of batch k
are fetched only after batch k+1 has been queued, so the GPU never waits for Python in between.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..events import EventHook, emit
from .batching import FileResult, ReadOptions, file_stat, pad_clouds, read_one

if TYPE_CHECKING:
    from ..run_spec import RunSpec

__all__ = ["FileResult", "ReadOptions", "classify_files", "classify_files_sequential", "default_workers", "run_precision"]

READER_NICE_ON_CPU = 10


def default_workers(n_files: int) -> int:
    """Reader processes when none are asked for: one per core this process may use, less one
    left to the model (on 2 cores, readers that take both slow the encoder down), and never
    more than there are files."""
    from ..distributed import cores_per_process

    return max(0, min(cores_per_process() - 1, n_files))


def run_precision(spec: RunSpec) -> str | None:
    """The one place a run's precision reaches the classifier: None for fp32 (the classifier keeps the
    precision it was built with), else the spec's (auto resolved by `check_precision`)."""
    return None if spec.precision == "fp32" else spec.precision


def check_precision(precision: str | None, device_type: str, torch_model: bool = True) -> str:
    """The precision a run will use ("auto" resolved; clip2point.models.precision): bf16 needs CUDA or
    a CPU with native bf16, fp16 needs CUDA, and both a torch model (an exported engine keeps its own)."""
    from ..models.precision import resolve_precision

    return resolve_precision(precision, device_type, torch_model)


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


def classify_files(classifier, paths: Sequence[str | Path], spec: RunSpec, *, on_event: EventHook | None = None) -> Iterator[FileResult]:
    """Yield a FileResult per path, in order. `classifier` is a classifier.PointCloudClassifier and
    `spec` the run's description (checked already: clip2point.run_spec.describe_run), of which the
    read options, batch size, top-k, workers and precision are used.

    `spec.workers` processes read and sample files ahead of the model (None: one per CPU core this
    process may use, less one); 0 reads in the calling process (then a reader crash is a crash of
    the caller). After each batch, `on_event` gets Event("files", done, total): files finished so
    far. `spec.precision` (fp32 / bf16 / fp16 / auto, clip2point.models.precision) is applied to the
    classifier's encoders before the first batch (once: the classifier keeps it; the projection
    stays float32).
    """
    precision = run_precision(spec)
    if precision is not None:  # else the classifier keeps its own (fp32 unless it was built otherwise)
        torch_model = isinstance(getattr(classifier, "head", None), torch.nn.Module)
        precision = check_precision(precision, _device_of(classifier).type, torch_model)
    paths = [Path(p) for p in paths]
    if not paths:
        return
    read, batch_size, top_k = spec.read_options(), spec.batch_size, spec.top_k
    workers = default_workers(len(paths)) if spec.workers is None else min(spec.workers, len(paths))
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
    done = [0]

    def finish(launched: _Launched) -> Iterator[FileResult]:
        results = launched.results(labels, top_k)
        yield from results
        done[0] += len(results)
        emit(on_event, "files", done[0], len(paths))

    def launches() -> Iterator[_Launched]:
        batch: list = []
        for path, (cloud, err) in zip(paths, reads, strict=True):
            batch.append((str(path), cloud, err, file_stat(path)))
            if len(batch) == batch_size:
                yield _launch(classifier, batch, precision)
                batch = []
        if batch:
            yield _launch(classifier, batch, precision)

    pending: _Launched | None = None
    try:
        for launched in launches():
            if pending is not None:
                yield from finish(pending)
            pending = launched
            if not defer:
                yield from finish(pending)
                pending = None
        if pending is not None:
            yield from finish(pending)
    finally:
        reads.close()


def classify_files_sequential(classifier, paths: Sequence[str | Path], spec: RunSpec):
    """One file at a time, no workers: the baseline the benchmark compares the pipeline with."""
    read = spec.read_options()
    for path in paths:
        yield from _launch(classifier, [(str(path), *read_one(path, read), file_stat(path))], None).results(
            classifier.labels, spec.top_k
        )
