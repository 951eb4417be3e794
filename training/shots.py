"""The k shots of a few-shot run: seeded sampling per class, and shots.json, which names them by
sample id so that a resumed run (or another rank) trains on exactly the same samples.

    shots.json   {"seed", "shots", "train": {label: [sample id]}, "val": {...}, "short_classes"}:
                 the sampled shots of readable files (a drawn file that fails to read is replaced
                 from its class), training and validation parts
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clip2point.errors import CheckpointError, DatasetError, InputFileError, Opt, OptionError, UsageError
from clip2point.store.checkpoints import read_json

from .features import FeatureSet


@dataclass
class ShotSplit:
    """Indices into a dataset: the k shots, divided into a training part and a validation part."""

    train: list[int]
    val: list[int]
    short_classes: dict[str, int]  # classes with fewer samples than requested shots -> how many they had

    @property
    def all(self) -> list[int]:
        return sorted(self.train + self.val)


def sample_shots(
    targets: Sequence[int],
    labels: Sequence[str],
    shots: int,
    seed: int = 0,
    val_fraction: float = 0.0,
    usable: Callable[[int], bool] | None = None,
) -> ShotSplit:
    """Seeded k-shot sampling: `shots` samples per class (all of a class that has fewer), and of each
    class's shots `round(val_fraction * k)` (at least 1 when val_fraction > 0 and k >= 2) held out
    for validation. Depends only on (targets, shots, seed, val_fraction) and, with `usable`, on
    which samples it accepts. A class without any sample raises `DatasetError`.

    Each class's members are visited in a seeded random order; `usable(i)` (e.g. "the file reads")
    is asked of each in turn until `shots` are accepted, so a rejected draw is replaced by the
    class's next member in that order rather than costing the class a shot. `short_classes` then
    counts the accepted samples of a class that could not fill its shots.
    """
    if shots < 1:
        raise OptionError(Opt("shots"), f" must be at least 1, got {shots}")
    if not 0.0 <= val_fraction < 1.0:
        raise UsageError(f"the validation fraction must be in [0, 1), got {val_fraction}")
    t = np.asarray(targets, dtype=np.int64)
    rng = np.random.default_rng(seed)
    train, val, short = [], [], {}
    empty = [labels[c] for c in range(len(labels)) if not (t == c).any()]
    if empty:
        raise DatasetError(f"no training samples for class(es): {', '.join(empty)}")
    for c in range(len(labels)):
        order = rng.permutation(np.flatnonzero(t == c)).tolist()
        if usable is None:
            chosen = order[:shots]
        else:
            chosen = []
            for i in order:
                if len(chosen) == shots:
                    break
                if usable(i):
                    chosen.append(i)
        k = len(chosen)
        if k < shots:
            short[labels[c]] = k
        n_val = 0
        if val_fraction > 0 and k >= 2:
            n_val = min(k - 1, max(1, int(round(val_fraction * k))))
        val += chosen[:n_val]
        train += chosen[n_val:]
    return ShotSplit(sorted(train), sorted(val), short)


def shots_json(dataset, split: ShotSplit, seed: int, shots: int) -> dict:
    """A run's shots.json: the shots by class and sample id, training and validation parts."""
    def by_class(indices):
        out: dict[str, list[str]] = {lab: [] for lab in dataset.labels}
        for i in indices:
            out[dataset.labels[dataset.targets[i]]].append(dataset.sample_ids[i])
        return out

    return {"seed": seed, "shots": shots, "train": by_class(split.train), "val": by_class(split.val),
            "short_classes": split.short_classes}


def load_shots(run: Path, dataset) -> ShotSplit:
    """The shots a run was started with (its shots.json), as indices into `dataset`.

    Resuming must train on the same samples: re-sampling would move shots between training and
    validation as soon as a file was added. A listed shot that is gone (or changed class) refuses.
    """
    from clip2point.store.run_files import FEWSHOT_SHOTS, check_fields

    path = run / "shots.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; cannot resume without the run's shots")
    saved = read_json(path)
    check_fields(path, saved, FEWSHOT_SHOTS)
    return split_from_ids(saved, dataset, lambda sid, problem: CheckpointError(
        f"{path}: shot {sid!r} {problem}; cannot resume with the run's shots"))


def split_from_ids(saved: dict, dataset, error: Callable[[str, str], Exception]) -> ShotSplit:
    """A shots.json-style dict ({"train"|"val": {label: [sample id]}, "short_classes"}) as indices
    into `dataset`; `error(sid, problem)` is raised for a shot that is not there or changed class."""
    index = {sid: i for i, sid in enumerate(dataset.sample_ids)}
    parts: dict[str, list[int]] = {}
    for part in ("train", "val"):
        parts[part] = []
        for label, ids in saved.get(part, {}).items():
            for sid in ids:
                i = index.get(sid)
                if i is None:
                    raise error(sid, "is no longer in the dataset")
                if dataset.labels[dataset.targets[i]] != label:
                    raise error(sid, f"is now class {dataset.labels[dataset.targets[i]]!r}, not {label!r}")
                parts[part].append(i)
    return ShotSplit(sorted(parts["train"]), sorted(parts["val"]), dict(saved.get("short_classes", {})))


class Preloaded:
    """A dataset view that hands out samples already read (once each) before reading the files again."""

    def __init__(self, dataset, loaded: dict[int, tuple]):
        self._dataset, self._loaded = dataset, loaded

    def __len__(self) -> int:
        return len(self._dataset)

    def __getitem__(self, i: int):
        return self._loaded.pop(i) if i in self._loaded else self._dataset[i]

    def __getattr__(self, name: str):
        return getattr(self._dataset, name)


def sample_readable_shots(dataset, shots: int, seed: int, val_fraction: float) -> tuple[ShotSplit, list[dict], Preloaded]:
    """Seeded shots of which every one reads; a drawn file that fails is replaced by the class's
    next member (deterministically) and listed as {"id", "error"}. The returned view of `dataset`
    serves the shots read for this check, so feature computation does not read them again."""
    unreadable: list[dict] = []
    loaded: dict[int, tuple] = {}

    def reads(i: int) -> bool:
        try:
            loaded[i] = dataset[i]
        except InputFileError as e:
            unreadable.append({"id": dataset.sample_ids[i], "error": str(e)})
            return False
        return True

    split = sample_shots(dataset.targets, dataset.labels, shots, seed, val_fraction, usable=reads)
    return split, unreadable, Preloaded(dataset, loaded)


def shot_counts(labels: Sequence[str], train: FeatureSet, val: FeatureSet | None) -> dict[str, dict[str, int]]:
    """Per class: how many training and validation shots the adapter really got (readable ones)."""
    def count(feats: FeatureSet | None) -> list[int]:
        if feats is None or not len(feats):
            return [0] * len(labels)
        return torch.bincount(feats.targets, minlength=len(labels)).tolist()

    return {lab: {"train": t, "val": v} for lab, t, v in zip(labels, count(train), count(val), strict=True)}
