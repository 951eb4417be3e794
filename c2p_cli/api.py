"""Classify arrays and files from Python, without the CLI.

    >>> from clip2point import load_classifier, classify_files
    >>> clf = load_classifier(labels="chair,table", model="c2p-tiny", pretrained="none")
    >>> for r in classify_files(["scans/", "more/**/*.ply"], classifier=clf, stream=True):
    ...     print(r.path, r.label, r.probability, r.error)   # as each batch finishes
    >>> results = classify_files("scan.ply", classifier=clf)  # or all at once, as a list
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from .engine.batching import FileResult
from .engine.pipeline import classify_files as _classify_files


def _classifier(classifier, load_kwargs):
    if classifier is not None:
        return classifier
    from .models.classifier import load_classifier

    return load_classifier(**load_kwargs)


def classify_points(points, classifier=None, *, up: str | None = None, **load_kwargs) -> torch.Tensor:
    """Probabilities [B, K] for clouds given as an [N, 3] array, a list of them, or a [B, N, 3] tensor.

    Raw clouds are centred and scaled into the unit sphere here; pass `up="z"` or `"y"` to also
    apply the up-axis rotation (files read by `read_cloud` get both). Without `classifier`, one is
    built with `load_classifier(**load_kwargs)` (e.g. labels="chair,table").
    """
    from .io import normalize_unit_sphere
    from .views import apply_up_axis

    clf = _classifier(classifier, load_kwargs)
    if isinstance(points, torch.Tensor) and points.dim() == 3:
        clouds = [p.detach().cpu().numpy() for p in points]
    elif isinstance(points, (np.ndarray, torch.Tensor)) and np.ndim(points) == 2:
        clouds = [np.asarray(points)]
    else:
        clouds = [np.asarray(p) for p in points]
    from .errors import UsageError

    prepared = []
    for i, c in enumerate(clouds):
        c = np.asarray(c, dtype=np.float64)
        if c.ndim != 2 or c.shape[1] < 3:
            raise UsageError(f"cloud {i} has shape {c.shape}: need N x 3 (or more columns)")
        c = c[:, :3][np.isfinite(c[:, :3]).all(axis=1)]  # NaN / Inf rows are dropped, as for files
        if len(c) == 0:
            raise UsageError(f"cloud {i} has no finite points")
        c = normalize_unit_sphere(c)
        prepared.append(apply_up_axis(c, up) if up is not None else c)
    return clf.predict(prepared)


def classify_files(
    paths: Sequence[str | Path] | str | Path,
    classifier=None,
    *,
    n_points: int = 1024,
    sampling: str = "random",
    seed: int = 0,
    up: str = "z",
    batch_size: int = 32,
    top_k: int = 5,
    workers: int | None = 0,
    recursive: bool = False,
    extensions: str | Sequence[str] | None = None,
    precision: str | None = None,
    stream: bool = False,
    **load_kwargs,
) -> list[FileResult] | Iterator[FileResult]:
    """A FileResult per file, in the order given: files, folders (expanded in sorted order; with
    `recursive`, sub-folders too; `extensions` such as "ply,npy" restricts them) and glob patterns
    ("scans/**/*.ply"). A file or path that could not be used carries its error instead of a label.
    `paths` may be a single path.

    `stream=True` returns a generator that yields each result as its batch finishes (as
    Ultralytics' `stream=True`): memory stays flat over any number of files, and breaking out of
    the loop stops the readers. By default the results come back as a list.
    `workers` reader processes read ahead of the model (None: one per core, less one; 0 reads in
    this process); a reader that crashes costs only the file it was reading.
    """
    from .engine.batching import ReadOptions
    from .engine.inputs import gather_inputs
    from .engine.pipeline import validate_run_options

    read = ReadOptions(n_points=n_points, sampling=sampling, seed=seed, up=up)
    read.validate()
    validate_run_options(batch_size, top_k, workers, precision)
    clf = _classifier(classifier, load_kwargs)
    entries = gather_inputs(paths, recursive=recursive, extensions=extensions)
    results = _in_order(entries, clf, read=read, batch_size=batch_size, top_k=top_k, workers=workers, precision=precision)
    return results if stream else list(results)


def _in_order(entries, clf, **kw) -> Iterator[FileResult]:
    files = [e for e in entries if isinstance(e, Path)]
    classified = _classify_files(clf, files, **kw)
    try:
        for e in entries:
            yield next(classified) if isinstance(e, Path) else e
        for _ in classified:  # let the pipeline close its readers
            pass
    finally:
        classified.close()
