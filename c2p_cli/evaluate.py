"""Accuracy of any point-cloud classifier on a labelled dataset: `c2p eval`, the few-shot test
report and pre-training's zero-shot validation all go through here.

A dataset is anything with `labels` (class names), `sample_ids`, `len()` and `dataset[i] ->
(points [n, 3], class index)` raising `InputFileError` for an unreadable sample (the readers of
`clip2point.training.datasets`). This module does not import them: the core never imports the
trainer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from . import defaults
from .errors import InputFileError, UsageError


def accuracy_report(targets: Sequence[int], preds: Sequence[int], labels: Sequence[str]) -> dict:
    """Top-1, per-class accuracy (None for classes without samples), their mean, and the confusion matrix."""
    t = np.asarray(targets, dtype=np.int64)
    p = np.asarray(preds, dtype=np.int64)
    k = len(labels)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (t, p), 1)
    counts = confusion.sum(axis=1)
    per_class = {
        lab: {"accuracy": (float(confusion[i, i] / counts[i]) if counts[i] else None), "count": int(counts[i])}
        for i, lab in enumerate(labels)
    }
    present = [v["accuracy"] for v in per_class.values() if v["accuracy"] is not None]
    return {
        "top1": float((t == p).mean()) if len(t) else 0.0,
        "mean_class_accuracy": float(np.mean(present)) if present else 0.0,
        "n": int(len(t)),
        "per_class": per_class,
        "confusion": confusion.tolist(),
        "labels": list(labels),
    }


def label_mapping(dataset_labels: Sequence[str], classifier_labels: Sequence[str], positional: bool = False) -> list[int]:
    """For each dataset class, the index of the classifier's label for it.

    By name (an adapter may know more classes than the dataset holds; "night_stand" matches
    "night stand"), or by position when the classifier's labels are the dataset's classes renamed
    (zero-shot prompts given as `labels`).
    """
    if positional:
        if len(classifier_labels) != len(dataset_labels):
            raise UsageError(
                f"{len(classifier_labels)} label names were given for a dataset with {len(dataset_labels)} classes "
                f"({', '.join(dataset_labels)})"
            )
        return list(range(len(dataset_labels)))
    from .models.prompts import canonical_label

    index = {name: i for i, name in enumerate(classifier_labels)}
    # "night_stand" (a folder name) is the official label "night stand": spellings are compared too.
    by_canonical = {canonical_label(name): i for i, name in reversed(list(enumerate(classifier_labels)))}
    found = [index.get(name, by_canonical.get(canonical_label(name))) for name in dataset_labels]
    missing = [name for name, i in zip(dataset_labels, found, strict=True) if i is None]
    if missing:
        raise UsageError(
            f"the classifier has no label for dataset class(es) {', '.join(missing)} "
            f"(it knows: {', '.join(classifier_labels)})"
        )
    return found


def read_samples(dataset, indices: Sequence[int]) -> tuple[list[tuple[int, np.ndarray, int]], list[dict]]:
    """(index, points, label) of the readable samples and {"id", "error"} of the others."""
    ok, skipped = [], []
    for i in indices:
        try:
            points, label = dataset[i]
        except InputFileError as e:
            skipped.append({"id": dataset.sample_ids[i], "error": str(e)})
            continue
        ok.append((i, points, label))
    return ok, skipped


def evaluate_classifier(
    clf,
    dataset,
    mapping: Sequence[int],
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
    limit: int | None = None,
) -> dict:
    """Top-1, per-class accuracy and confusion of `clf` (a `PointCloudClassifier`) on the first
    `limit` (default: all) samples of `dataset`.

    Unreadable samples are skipped and listed under "skipped"; rows of the confusion matrix are true
    classes, columns predictions, both in the classifier's label order (`mapping` turns a dataset
    class index into the classifier's).
    """
    if batch_size < 1:
        raise UsageError(f"batch_size must be at least 1, got {batch_size}")
    targets, preds, skipped = [], [], []
    ids: list[str] = []
    total = len(dataset) if limit is None else min(int(limit), len(dataset))
    for start in range(0, total, batch_size):
        ok, bad = read_samples(dataset, range(start, min(start + batch_size, total)))
        skipped += bad
        if ok:
            logits = clf.logits([p for _, p, _ in ok])
            preds += logits.argmax(-1).tolist()
            targets += [mapping[t] for _, _, t in ok]
            ids += [dataset.sample_ids[i] for i, _, _ in ok]
        if progress is not None:
            progress(min(start + batch_size, total), total)
    report = accuracy_report(targets, preds, clf.labels)
    report["skipped"] = skipped
    report["predictions"] = [
        {"id": sid, "label": clf.labels[t], "predicted": clf.labels[p]} for sid, t, p in zip(ids, targets, preds, strict=True)
    ]
    return report


def classifier_for_dataset(
    dataset_labels: Sequence[str],
    *,
    adapter: str | Path | None = None,
    which: str = "best",
    labels: str | Sequence[str] | None = None,
    label_set: str | None = None,
    templates: Sequence[str] | None = None,
    model: str = defaults.MODEL,
    pretrained: str = defaults.PRETRAINED,
    depth_encoder: str | Path | None = None,
    views=defaults.ZERO_SHOT_VIEWS,
    device: str = "auto",
) -> tuple[object, list[int], str]:
    """(classifier, mapping from dataset class to classifier label, "zero-shot" | "few-shot").

    Zero-shot (no `adapter`): prompts are the dataset's class names, unless `labels` renames them
    (same order) or `label_set` names a built-in set in which the classes are looked up by name.
    Few-shot: `adapter` is a `c2p fewshot` run folder, which brings its own labels and encoders, or
    the official CLIP2Point DPA checkpoint, whose labels come from `labels` / `label_set` (by
    position) or else the dataset's class names.
    """
    if adapter is not None:
        from .models.adapters import load_adapter_classifier

        adapter = Path(adapter)
        if depth_encoder is not None:
            raise UsageError("an adapter brings its own encoders: no separate depth encoder can be given")
        names = None
        if adapter.is_file():  # the official checkpoint carries no labels
            from .models.prompts import resolve_labels

            names = resolve_labels(labels, label_set) if (labels or label_set) else list(dataset_labels)
        elif labels or label_set:
            raise UsageError("an adapter run brings its own labels: no labels or label set can be given")
        clf = load_adapter_classifier(
            adapter, device=device, which=which, labels=names, templates=templates, model=model, pretrained=pretrained
        )
        mapping = label_mapping(dataset_labels, clf.labels, positional=adapter.is_file() and bool(labels))
        return clf, mapping, "few-shot"

    from .models.classifier import load_classifier

    common = {"model": model, "pretrained": pretrained, "depth_encoder": depth_encoder, "views": views,
              "templates": templates, "device": device}
    if labels is not None:
        clf = load_classifier(labels=labels, **common)
        return clf, label_mapping(dataset_labels, clf.labels, positional=True), "zero-shot"
    if label_set is not None:
        clf = load_classifier(label_set=label_set, **common)
        return clf, label_mapping(dataset_labels, clf.labels), "zero-shot"
    clf = load_classifier(labels=list(dataset_labels), **common)
    return clf, list(range(len(dataset_labels))), "zero-shot"


# `c2p eval` under torchrun: each rank evaluates every world_size-th sample, rank 0 merges the reports
# into the one a single process writes (predictions and skipped samples in dataset order).


class DatasetShard:
    """The samples `indices` of a dataset (see clip2point.evaluate for what a dataset provides)."""

    def __init__(self, dataset, indices: Sequence[int]):
        self.dataset = dataset
        self.indices = list(indices)
        self.labels = dataset.labels
        self.sample_ids = [dataset.sample_ids[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset[self.indices[i]]


def merge_reports(reports: Sequence[dict], sample_ids: Sequence[str], labels: Sequence[str]) -> dict:
    """One report from the ranks' reports on disjoint shards of a dataset with `sample_ids`."""
    order = {sid: i for i, sid in enumerate(sample_ids)}
    predictions = sorted((p for r in reports for p in r["predictions"]), key=lambda p: order[p["id"]])
    skipped = sorted((s for r in reports for s in r["skipped"]), key=lambda s: order[s["id"]])
    index = {name: i for i, name in enumerate(labels)}
    merged = accuracy_report([index[p["label"]] for p in predictions], [index[p["predicted"]] for p in predictions], labels)
    merged["skipped"] = skipped
    merged["predictions"] = predictions
    return merged
