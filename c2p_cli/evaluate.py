"""Accuracy of any point-cloud classifier on a labelled dataset: `c2p eval`, the few-shot test
report and pre-training's zero-shot validation all go through here.

A dataset is anything with `labels` (class names), `sample_ids`, `len()` and `dataset[i] ->
(points [n, 3], class index)` raising `InputFileError` for an unreadable sample (the readers of
`clip2point.training.datasets`). This module does not import them: the core never imports the
trainer.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence

import numpy as np

from .errors import C2PError, InputFileError, UsageError
from .events import EventHook, emit


class EvalInterrupted(C2PError):
    """Ctrl-C during an evaluation; `report` holds the samples done so far (marked "complete": False)."""

    exit_code = 130

    def __init__(self, report: dict):
        self.report = report
        super().__init__(f"interrupted after {report['n'] + len(report['skipped'])} samples")


def accuracy_report(targets: Sequence[int], preds: Sequence[int], labels: Sequence[str],
                    ranked: Sequence[Sequence[int]] | None = None) -> dict:
    """Top-1, per-class accuracy (None for classes without samples), their mean, and the confusion
    matrix; with `ranked` (each sample's k most probable classes, best first) the top-k accuracy too."""
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
    report = {
        "top1": float((t == p).mean()) if len(t) else 0.0,
        "mean_class_accuracy": float(np.mean(present)) if present else 0.0,
        "n": int(len(t)),
        "per_class": per_class,
        "confusion": confusion.tolist(),
        "labels": list(labels),
    }
    if ranked is not None:
        hits = [int(target) in list(r) for target, r in zip(t.tolist(), ranked, strict=True)]
        report["top_k"] = max((len(r) for r in ranked), default=1)
        report["top_k_accuracy"] = float(np.mean(hits)) if hits else 0.0
    return report


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


def _read_one_sample(dataset, i: int):
    return read_samples(dataset, [i])


def _batches(dataset, total: int, batch_size: int, workers: int) -> Iterator[tuple[list, list]]:
    """(readable samples, skipped samples) of each batch of the first `total` samples, read by
    `workers` reader processes ahead of the model (0: in this process). A reader that dies costs
    only the sample it was reading."""
    starts = range(0, total, batch_size)
    if workers <= 0:
        for start in starts:
            yield read_samples(dataset, range(start, min(start + batch_size, total)))
        return
    from .engine.reader_pool import ReaderPool

    with ReaderPool(workers, functools.partial(_read_one_sample, dataset), ahead=max(2 * batch_size, 2 * workers)) as pool:
        read = pool.imap(list(range(total)))
        for start in starts:
            ok, skipped = [], []
            for i in range(start, min(start + batch_size, total)):
                kind, value = next(read)
                if kind == "ok":
                    ok += value[0]
                    skipped += value[1]
                else:
                    skipped.append({"id": dataset.sample_ids[i], "error": f"{dataset.sample_ids[i]}: {value}"})
            yield ok, skipped


def evaluate_classifier(
    clf,
    dataset,
    mapping: Sequence[int],
    batch_size: int = 32,
    *,
    top_k: int = 1,
    workers: int = 0,
    limit: int | None = None,
    on_event: EventHook | None = None,
) -> dict:
    """Top-1 (and top-`top_k`), per-class accuracy and confusion of `clf` (a `PointCloudClassifier`)
    on the first `limit` (default: all) samples of `dataset`, read by `workers` reader processes.

    Unreadable samples are skipped and listed under "skipped"; rows of the confusion matrix are true
    classes, columns predictions, both in the classifier's label order (`mapping` turns a dataset
    class index into the classifier's). Events: ("eval", done, total) after each batch. Ctrl-C
    raises `EvalInterrupted` with the report of the samples done so far.
    """
    if batch_size < 1:
        raise UsageError(f"batch_size must be at least 1, got {batch_size}")
    k = max(1, min(int(top_k), len(clf.labels)))
    targets, preds, ranked, skipped, ids = [], [], [], [], []
    total = len(dataset) if limit is None else min(int(limit), len(dataset))
    done = 0
    batches = _batches(dataset, total, batch_size, workers)
    try:
        for ok, bad in batches:
            skipped += bad
            if ok:
                logits = clf.logits([p for _, p, _ in ok])
                preds += logits.argmax(-1).tolist()
                ranked += logits.topk(k, dim=-1).indices.tolist()
                targets += [mapping[t] for _, _, t in ok]
                ids += [dataset.sample_ids[i] for i, _, _ in ok]
            done += len(ok) + len(bad)
            emit(on_event, "eval", done, total)
    except KeyboardInterrupt:
        batches.close()
        report = _report(clf.labels, targets, preds, ranked, skipped, ids, k)
        report["complete"] = False
        raise EvalInterrupted(report) from None
    return _report(clf.labels, targets, preds, ranked, skipped, ids, k)


def _report(labels, targets, preds, ranked, skipped, ids, k: int) -> dict:
    report = accuracy_report(targets, preds, labels, ranked if k > 1 else None)
    report["skipped"] = skipped
    report["predictions"] = [
        {"id": sid, "label": labels[t], "predicted": labels[p], **({"top_k": [labels[j] for j in r]} if k > 1 else {})}
        for sid, t, p, r in zip(ids, targets, preds, ranked, strict=True)
    ]
    return report


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
    ranked = [[index[name] for name in p["top_k"]] for p in predictions] if predictions and "top_k" in predictions[0] else None
    merged = accuracy_report([index[p["label"]] for p in predictions], [index[p["predicted"]] for p in predictions], labels,
                             ranked)  # fmt: skip
    merged["skipped"] = skipped
    merged["predictions"] = predictions
    return merged
