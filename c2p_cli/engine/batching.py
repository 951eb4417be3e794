"""Torch-free pieces of batch classification, shared by `c2p classify` (clip2point.engine.pipeline) and the
torch-free ONNX runner (clip2point.export.run_onnx): the per-file result, reading a file without raising,
putting results back in input order, and padding ragged clouds into one batch. numpy and the standard
library only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import defaults
from ..errors import C2PError


def top_labels(probs, labels: Sequence[str], top_k: int) -> list[tuple[str, float]]:
    """The `top_k` most probable (label, probability) pairs of one row of probabilities (ties keep label order)."""
    p = np.asarray(probs, dtype=np.float64)
    order = np.argsort(-p, kind="stable")[: min(top_k, len(labels))]
    return [(labels[int(j)], float(p[j])) for j in order]


@dataclass
class Prediction:
    """What a classifier says about one cloud given as an array (`clip2point.classify_points`): its
    label, the label's probability, the `top_k` most probable labels and every label's probability."""

    label: str
    probability: float
    top_k: list[tuple[str, float]]
    probabilities: dict[str, float]
    n_points: int

    @classmethod
    def from_probabilities(cls, probs, labels: Sequence[str], top_k: int, n_points: int) -> Prediction:
        tops = top_labels(probs, labels, top_k)
        every = {lab: float(p) for lab, p in zip(labels, np.asarray(probs, dtype=np.float64), strict=True)}
        return cls(label=tops[0][0], probability=tops[0][1], top_k=tops, probabilities=every, n_points=n_points)

    def to_dict(self) -> dict:
        return {"label": self.label, "probability": self.probability,
                "top_k": [{"label": lab, "probability": p} for lab, p in self.top_k], "n_points": self.n_points,
                "probabilities": dict(self.probabilities)}  # fmt: skip


@dataclass
class FileResult:
    """The outcome for one input file: a label with probabilities, or the error that stopped it."""

    path: str
    label: str | None = None
    probability: float | None = None
    top_k: list[tuple[str, float]] = field(default_factory=list)
    n_points: int | None = None
    error: str | None = None
    # The file's size and modification time when it was read: `--resume` trusts a row only while both hold.
    size: int | None = None
    mtime: float | None = None

    @classmethod
    def from_probabilities(cls, path: str, probs, labels: Sequence[str], top_k: int, n_points: int) -> FileResult:
        """The `top_k` most probable labels of one row of probabilities (ties keep label order)."""
        tops = top_labels(probs, labels, top_k)
        return cls(path=path, label=tops[0][0], probability=tops[0][1], top_k=tops, n_points=n_points)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "label": self.label,
            "probability": self.probability,
            "top_k": [{"label": lab, "probability": p} for lab, p in self.top_k],
            "n_points": self.n_points,
            "error": self.error,
            "size": self.size,
            "mtime": self.mtime,
        }

    @classmethod
    def from_dict(cls, row: dict) -> FileResult:
        """The inverse of `to_dict` (missing keys are None); raises ValueError / TypeError / KeyError on rows of another shape."""
        path = row["path"]
        if not isinstance(path, str) or not path:
            raise ValueError("a result row needs a path")
        tops = [(str(t["label"]), float(t["probability"])) for t in row.get("top_k") or []]

        def opt(key, kind):
            value = row.get(key)
            return None if value is None or value == "" else kind(value)

        return cls(path=path, label=opt("label", str), probability=opt("probability", float), top_k=tops,
                   n_points=opt("n_points", int), error=opt("error", str), size=opt("size", int), mtime=opt("mtime", float))


@dataclass(frozen=True)
class ReadOptions:
    """How files become clouds (see clip2point.io.read_cloud)."""

    n_points: int = 1024
    sampling: str = "random"
    seed: int = 0
    up: str = "z"
    max_points: int = defaults.MAX_POINTS  # the most points a file may declare
    bin_columns: int = defaults.BIN_COLUMNS  # float32 columns of .bin scans

    def validate(self) -> None:
        """For callers that build ReadOptions themselves (the torch-free runner); a run checks its
        description once instead (clip2point.run_spec)."""
        from .. import option_table

        for name in ("n_points", "sampling", "seed", "up", "max_points", "bin_columns"):
            option_table.check(name, getattr(self, name))


def read_one(path: str | Path, options: ReadOptions) -> tuple[np.ndarray | None, str | None]:
    """(cloud, None) or (None, one-line error): errors are returned so a batch is never lost."""
    from ..io import read_cloud

    try:
        return read_cloud(
            path, n_points=options.n_points, sampling=options.sampling, seed=options.seed, up=options.up,
            max_points=options.max_points, bin_columns=options.bin_columns,
        ), None
    except C2PError as e:
        return None, str(e)
    except Exception as e:  # an unforeseen reader failure still belongs to this file alone
        return None, f"{path}: unexpected {type(e).__name__}: {e}"


def file_stat(path: str | Path) -> tuple[int | None, float | None]:
    """(size, modification time) of a file, or (None, None) when it cannot be stat'ed: what a result
    row records so that `--resume` trusts it only while both hold."""
    try:
        st = os.stat(path)
    except OSError:
        return None, None
    return st.st_size, st.st_mtime


def in_input_order(
    entries: Sequence[Path | FileResult], classified: Iterable[FileResult], reuse: Mapping[str, FileResult] | None = None
) -> Iterator[FileResult]:
    """The result of each entry, in the entries' order, as soon as it is known: an entry that is a
    FileResult (an unusable path) is its own result, a path with a row in `reuse` (keyed by path)
    takes that row, every other path takes the next of `classified` (their results in file order).

    Once the entries are done, `classified` is run to its end (a pipeline reports its last batch
    then) and closed, also when the caller stops early."""
    classified = iter(classified)
    try:
        for e in entries:
            if isinstance(e, FileResult):
                yield e
            elif reuse is not None and str(e) in reuse:
                yield reuse[str(e)]
            else:
                yield next(classified)
        for _ in classified:
            raise C2PError("internal error: more results than inputs")  # pragma: no cover
    finally:
        close = getattr(classified, "close", None)
        if close is not None:
            close()


def pad_clouds(clouds: Sequence[np.ndarray], min_points: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Ragged [n_i, 3] clouds -> (points float32 [B, max(n_max, min_points), 3] zero-padded,
    lengths int64 [B]). The renderer ignores points beyond each cloud's length."""
    lengths = np.array([len(c) for c in clouds], dtype=np.int64)
    n_max = max(int(lengths.max(initial=0)), min_points)
    points = np.zeros((len(clouds), n_max, 3), dtype=np.float32)
    for b, c in enumerate(clouds):
        points[b, : len(c)] = np.asarray(c, dtype=np.float32)[:, :3]
    return points, lengths
