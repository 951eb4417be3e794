"""Classify arrays and files from Python, with the CLI's defaults and the CLI's answers.

    >>> from clip2point import load_classifier, classify_files, classify_points, read_cloud
    >>> clf = load_classifier(labels="chair,table", model="c2p-tiny", pretrained="none")
    >>> for r in classify_files(["scans/", "more/**/*.ply"], classifier=clf, stream=True):
    ...     print(r.path, r.label, r.probability, r.error)   # as each batch finishes
    >>> results = classify_files("scan.ply", classifier=clf)  # or all at once, as a list
    >>> [p.label for p in classify_points(read_cloud("scan.ply"), classifier=clf)]

Both take the options of `c2p classify` by their Python names (`labels`, `label_set`,
`labels_file`, `templates`, `model`, `pretrained`, `depth_encoder`, `adapter`, `which`, `backend`,
`engine`, `views`, `n_points`, `sampling`, `up`, `seed`, `precision`, `batch_size`, `top_k`,
`workers`, `device`, ...), with the same defaults (clip2point.option_table), checked once into a
`clip2point.run_spec.RunSpec`. Without `classifier`, the options build one as the CLI does
(clip2point.models.resolve); with it, options that would build another are refused, and reading
options left unset take an adapter's own, as in the CLI.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .engine.batching import FileResult, Prediction
from .errors import InputFileError, OptionError, UsageError

# Options that say which classifier to build (refused next to a classifier that is already built).
BUILDING = ("labels", "labels_file", "label_set", "templates", "model", "pretrained", "depth_encoder", "adapter", "which",
            "backend", "engine", "views", "device")


def _spec_and_classifier(classifier, options: dict):
    """(complete description, classifier): the options checked once; the classifier given or built from them."""
    from .run_spec import complete, describe_run

    if classifier is not None:
        building = [name for name in BUILDING if options.get(name) is not None]
        if building:
            raise OptionError(f"give a classifier or the options that build one ({', '.join(building)}), not both")
        spec = describe_run(**options, needs_labels=False)
    else:
        from .models.resolve import load_run_classifier

        spec = describe_run(**options)
        classifier = load_run_classifier(spec)
    spec, notes = complete(spec, classifier)
    for note in notes:
        warnings.warn(str(note), stacklevel=3)
    return spec, classifier


def classify_points(points, classifier=None, **options) -> list:
    """A `Prediction` (label, probability, top_k, probabilities, n_points) per cloud, for clouds given as
    an [N, 3] array, a list of them, or a [B, N, 3] array / tensor.

    A cloud from `read_cloud` (a `clip2point.io.Cloud`) is used as it is. Any other array is
    prepared as `c2p classify` prepares a file's points, with the same options and defaults (1024
    points, `sampling="random"`, `seed=0`, `up="z"`): rows with NaN / Inf dropped, sampled, centred
    and scaled into the unit sphere, turned so that `up` becomes +y. A cloud whose points all
    coincide is refused, as `read_cloud` refuses such a file. Give `up` only for raw arrays: a
    prepared cloud turned from another axis is refused rather than turned twice.
    """
    from .io import Cloud, prepare_cloud

    spec, clf = _spec_and_classifier(classifier, options)
    prepared = []
    for i, cloud in enumerate(_clouds(points)):
        if isinstance(cloud, Cloud):
            if options.get("up") is not None and cloud.up is not None and options["up"] != cloud.up:
                raise OptionError(f"cloud {i} was read with up={cloud.up!r}; it is not turned again for up={options['up']!r}")
            prepared.append(np.asarray(cloud))
            continue
        try:
            prepared.append(np.asarray(prepare_cloud(cloud, spec.n_points, spec.sampling, spec.seed, spec.up, name=f"cloud {i}")))
        except InputFileError as e:
            raise UsageError(str(e)) from None
    out = []
    for start in range(0, len(prepared), spec.batch_size):
        batch = prepared[start : start + spec.batch_size]
        probs = clf.predict(batch).cpu().numpy()
        out += [Prediction.from_probabilities(p, clf.labels, spec.top_k, len(c)) for p, c in zip(probs, batch, strict=True)]
    return out


def _clouds(points) -> list:
    """The clouds of `points`: one [N, 3+] array, a [B, N, 3+] batch, or a sequence of clouds."""
    if hasattr(points, "detach"):  # a torch tensor
        points = points.detach().cpu().numpy()
    if isinstance(points, np.ndarray):
        if points.ndim == 2:
            return [points]
        if points.ndim == 3:
            return list(points)
        raise UsageError(f"points of shape {points.shape}: give an [N, 3] cloud, a [B, N, 3] batch or a list of clouds")
    clouds = [c.detach().cpu().numpy() if hasattr(c, "detach") else c for c in points]
    if not clouds:
        raise UsageError("no point clouds to classify")
    return [c if isinstance(c, np.ndarray) else np.asarray(c, dtype=np.float64) for c in clouds]


def classify_files(
    paths: Sequence[str | Path] | str | Path,
    classifier=None,
    *,
    recursive: bool = False,
    extensions: str | Sequence[str] | None = None,
    stream: bool = False,
    **options,
) -> list[FileResult] | Iterator[FileResult]:
    """A FileResult per file, in the order given: files, folders (expanded in sorted order; with
    `recursive`, sub-folders too; `extensions` such as "ply,npy" restricts them) and glob patterns
    ("scans/**/*.ply"). A file or path that could not be used carries its error instead of a label.
    `paths` may be a single path. `FileResult.to_dict()` is the row `c2p classify` writes.

    `stream=True` returns a generator that yields each result as its batch finishes (as
    Ultralytics' `stream=True`): memory stays flat over any number of files, and breaking out of
    the loop stops the readers. By default the results come back as a list.
    `workers` reader processes read ahead of the model (default: one per core, less one; 0 reads
    in this process); a reader that crashes costs only the file it was reading.
    """
    from .engine.batching import in_input_order
    from .engine.inputs import gather_inputs
    from .engine.pipeline import classify_files as pipeline

    spec, clf = _spec_and_classifier(classifier, options)
    entries = gather_inputs(paths, recursive=recursive, extensions=extensions)
    files = [e for e in entries if isinstance(e, Path)]
    results = in_input_order(entries, pipeline(clf, files, spec) if files else iter(()))
    return results if stream else list(results)
