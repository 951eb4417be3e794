"""Classify arrays and files from Python, without the CLI.

    >>> from clip2point import load_classifier, classify_files
    >>> clf = load_classifier(labels="chair,table", model="c2p-tiny", pretrained="none")
    >>> for r in classify_files(["scan.ply"], classifier=clf):
    ...     print(r.path, r.label, r.probability, r.error)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .batching import FileResult, ReadOptions
from .pipeline import classify_files as _classify_files


def _classifier(classifier, load_kwargs):
    if classifier is not None:
        return classifier
    from .classifier import load_classifier

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
    **load_kwargs,
) -> list[FileResult]:
    """A FileResult per file, in the order given (folders expanded in sorted order); a file or path
    that could not be used carries its error instead of a label. `paths` may be a single path."""
    from .batching import gather_inputs, in_input_order

    clf = _classifier(classifier, load_kwargs)
    entries = gather_inputs(paths)
    files = [e for e in entries if isinstance(e, Path)]
    read = ReadOptions(n_points=n_points, sampling=sampling, seed=seed, up=up)
    return in_input_order(entries, _classify_files(clf, files, read=read, batch_size=batch_size, top_k=top_k, workers=workers))
