"""Torch-free pieces of batch classification, shared by `c2p classify` (clip2point.engine.pipeline) and the
torch-free ONNX runner (clip2point.export.run_onnx): the per-file result, reading a file without raising,
expanding paths in order, and padding ragged clouds into one batch. numpy and the standard library only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import defaults
from ..errors import C2PError, Opt, OptionError


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
        p = np.asarray(probs, dtype=np.float64)
        order = np.argsort(-p, kind="stable")[: min(top_k, len(labels))]
        tops = [(labels[int(j)], float(p[j])) for j in order]
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
        if self.n_points < 1:
            raise OptionError(Opt("n_points"), f" must be at least 1, got {self.n_points}")
        if self.sampling not in ("random", "fps"):
            raise OptionError(Opt("sampling"), f" must be random or fps, got {self.sampling!r}")
        if self.up not in ("z", "y"):
            raise OptionError(Opt("up"), f" must be z or y, got {self.up!r}")
        from ..io import check_read_limits

        check_read_limits(self.max_points, self.bin_columns)


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


def gather_inputs(
    paths: Sequence[str | Path] | str | Path, recursive: bool = False, extensions: str | Sequence[str] | None = None
) -> list[Path | FileResult]:
    """Expand files, folders and glob patterns into input files, in the order given; a path that
    cannot be used (missing, unreadable folder) stands in that order as an error result instead.
    See clip2point.engine.inputs.gather_inputs."""
    from .inputs import gather_inputs as gather

    return gather(paths, recursive=recursive, extensions=extensions)


def in_input_order(entries: Sequence[Path | FileResult], classified: Iterable[FileResult]) -> list[FileResult]:
    """Merge the results of the entries' files (an iterable in file order) back among the entries' errors."""
    classified = iter(classified)
    return [next(classified) if isinstance(e, Path) else e for e in entries]


def pad_clouds(clouds: Sequence[np.ndarray], min_points: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Ragged [n_i, 3] clouds -> (points float32 [B, max(n_max, min_points), 3] zero-padded,
    lengths int64 [B]). The renderer ignores points beyond each cloud's length."""
    lengths = np.array([len(c) for c in clouds], dtype=np.int64)
    n_max = max(int(lengths.max(initial=0)), min_points)
    points = np.zeros((len(clouds), n_max, 3), dtype=np.float32)
    for b, c in enumerate(clouds):
        points[b, : len(c)] = np.asarray(c, dtype=np.float32)[:, :3]
    return points, lengths
