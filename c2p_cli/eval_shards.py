"""`c2p eval` under torchrun: each rank evaluates every world_size-th sample, rank 0 merges the reports.

The merged report is the one a single process writes: predictions and skipped samples in dataset
order, accuracy and confusion recomputed from all of them.
"""

from __future__ import annotations

from collections.abc import Sequence


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
    from .evaluate import accuracy_report

    order = {sid: i for i, sid in enumerate(sample_ids)}
    predictions = sorted((p for r in reports for p in r["predictions"]), key=lambda p: order[p["id"]])
    skipped = sorted((s for r in reports for s in r["skipped"]), key=lambda s: order[s["id"]])
    index = {name: i for i, name in enumerate(labels)}
    merged = accuracy_report([index[p["label"]] for p in predictions], [index[p["predicted"]] for p in predictions], labels)
    merged["skipped"] = skipped
    merged["predictions"] = predictions
    return merged
