"""One schema for the files of run folders, checked before anything is built from them.

A run folder may be forged or damaged: `classify --adapter RUN`, `eval --adapter RUN`,
`fewshot --resume` and `pretrain --resume` read its JSON and tensors. Every field they use is
checked here for presence, type and bounds before any model is built or memory allocated (a
`num_views` of 200000 would otherwise ask for a 200000 x 512 x 512 linear layer, an `image_size` of
20000 for 16 GB of depth maps), and every problem is one `RunFileError` naming the file and the
field. Resume reads only inside the run folder: `latest.json` must name a checkpoint folder of the
run, not a path.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .. import option_table
from ..errors import CheckpointError

# Bounds and choices shared with the CLI and the API come from the option table.
MAX_VIEWS = option_table.MAX_VIEWS
MAX_IMAGE_SIZE = 1024
MAX_LABELS = option_table.MAX_LABELS
MAX_TEXT = 10_000  # characters of one label, template, id or note
MAX_POINTS = 10_000_000  # entries of a list of shots
MAX_COUNT = 10**12  # steps, epochs, positions
FUSIONS = option_table.choices("fusion")
SELECTIONS = option_table.choices("select")
CHECKPOINT_NAME = re.compile(r"^step-\d{1,12}$")

_MISSING = object()
Rule = Callable[[Path, str, Any], None]


class RunFileError(CheckpointError):
    """A run-folder file whose field is missing, of the wrong type or out of bounds."""

    def __init__(self, path: str | Path, field: str, problem: str):
        self.path, self.field, self.problem = str(path), field, problem
        super().__init__(f"{self.path}: {field}: {problem}" if field else f"{self.path}: {problem}")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- rules: each takes (file, field name, value) and raises RunFileError -------------------------


def integer(low: int = 0, high: int = MAX_COUNT) -> Rule:
    def check(path: Path, name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RunFileError(path, name, f"must be a whole number, got {_show(value)}")
        if not low <= value <= high:
            raise RunFileError(path, name, f"must be between {low} and {high}, got {value}")
    return check


def number(low: float = -math.inf, high: float = math.inf, *, low_open: bool = False, infinite: bool = False) -> Rule:
    """A JSON number within bounds; finite unless `infinite` (then +-Infinity pass, NaN never)."""
    def check(path: Path, name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise RunFileError(path, name, f"must be a number, got {_show(value)}")
        if math.isinf(value):
            if infinite:
                return
            raise RunFileError(path, name, f"must be a finite number, got {_show(value)}")
        if value < low or value > high or (low_open and value == low):
            bounds = f"{'above' if low_open else 'at least'} {low}" + (f" and at most {high}" if high < math.inf else "")
            raise RunFileError(path, name, f"must be {bounds}, got {value}")
    return check


def text(choices: Sequence[str] | None = None, pattern: re.Pattern | None = None, *, nonempty: bool = False) -> Rule:
    def check(path: Path, name: str, value: Any) -> None:
        if not isinstance(value, str):
            raise RunFileError(path, name, f"must be text, got {_show(value)}")
        if nonempty and not value:
            raise RunFileError(path, name, "must not be empty")
        if len(value) > MAX_TEXT:
            raise RunFileError(path, name, f"is {len(value)} characters long (at most {MAX_TEXT})")
        if choices is not None and value not in choices:
            raise RunFileError(path, name, f"must be one of {', '.join(choices)}, got {_show(value)}")
        if pattern is not None and not pattern.match(value):
            raise RunFileError(path, name, f"has an unexpected form: {_show(value)}")
    return check


def boolean() -> Rule:
    def check(path: Path, name: str, value: Any) -> None:
        if not isinstance(value, bool):
            raise RunFileError(path, name, f"must be true or false, got {_show(value)}")
    return check


def optional(rule: Rule) -> Rule:
    """`rule`, or the field absent or null."""
    def check(path: Path, name: str, value: Any) -> None:
        if value is not _MISSING and value is not None:
            rule(path, name, value)
    check.optional = True  # type: ignore[attr-defined]
    return check


def list_of(item: Rule, low: int = 0, high: int = MAX_LABELS) -> Rule:
    def check(path: Path, name: str, value: Any) -> None:
        if not isinstance(value, list):
            raise RunFileError(path, name, f"must be a list, got {_show(value)}")
        if not low <= len(value) <= high:
            raise RunFileError(path, name, f"must hold {low} to {high} items, got {len(value)}")
        for i, v in enumerate(value):
            item(path, f"{name}[{i}]", v)
    return check


def mapping(spec: dict[str, Rule] | None = None, values: Rule | None = None, high: int = MAX_LABELS) -> Rule:
    """A JSON object: the fields of `spec` checked by name, or every value by `values`."""
    def check(path: Path, name: str, value: Any) -> None:
        if not isinstance(value, dict):
            raise RunFileError(path, name, f"must be an object, got {_show(value)}")
        if len(value) > high:
            raise RunFileError(path, name, f"holds {len(value)} entries (at most {high})")
        if spec is not None:
            check_fields(path, value, spec, prefix=f"{name}.")
        if values is not None:
            for key, v in value.items():
                values(path, f"{name}.{key}", v)
    return check


def check_fields(path: str | Path, obj: Any, spec: dict[str, Rule], prefix: str = "") -> None:
    """Check `obj` (a parsed JSON object) against `spec`: field name -> rule. Unknown fields pass."""
    path = Path(path)
    if not isinstance(obj, dict):
        raise RunFileError(path, prefix.rstrip("."), f"must be a JSON object, got {_show(obj)}")
    for name, rule in spec.items():
        value = obj.get(name, _MISSING)
        if value is _MISSING and not getattr(rule, "optional", False):
            raise RunFileError(path, prefix + name, "missing")
        rule(path, prefix + name, value)


# --- the files -----------------------------------------------------------------------------------

_VIEW = list_of(number(-3600.0, 3600.0), 2, 2)
_SHA256 = text(pattern=re.compile(r"^[0-9a-f]{64}$"))
# What run folders and exports (c2p_export.json, a graph's c2p.* metadata) both describe: one rule each.
LABELS = list_of(text(nonempty=True), 1, MAX_LABELS)
VIEWS = list_of(_VIEW, 1, MAX_VIEWS)
IMAGE_SIZE = integer(16, MAX_IMAGE_SIZE)
RADIUS = number(0.0, 2.0, low_open=True)
N_POINTS = integer(1, option_table.MAX_SAMPLE_POINTS)  # points sampled per shape: the bound of every --points
SAMPLING = text(option_table.choices("sampling"))
UP_AXIS = text(option_table.choices("up"))

FEWSHOT_CONFIG: dict[str, Rule] = {
    "labels": LABELS,
    "templates": optional(list_of(text(), 1, 1000)),
    "model": text(),
    "pretrained": text(),
    "weights_id": text(),
    "depth_encoder": optional(text()),
    "depth_encoder_sha256": optional(_SHA256),
    "fold": optional(boolean()),
    "fusion": text(FUSIONS),
    "dropout": optional(number(0.0, 0.999)),
    "normalize_views": optional(boolean()),
    "num_views": integer(1, MAX_VIEWS),
    "views": optional(VIEWS),
    "dim": optional(integer(1, 65_536)),
    "logit_scale": optional(number(0.0, 10_000.0, low_open=True)),
    "probability_scale": optional(number(0.0, 10_000.0, low_open=True)),
    "image_size": optional(IMAGE_SIZE),
    "radius": optional(RADIUS),
    "dataset": optional(mapping({"n_points": optional(N_POINTS), "sampling": optional(SAMPLING), "up": optional(UP_AXIS)})),
    "options": optional(mapping()),
    "selection": optional(mapping({"select": optional(text(SELECTIONS)), "note": optional(text())})),
    "resamples": optional(integer(1, 1000)),
}

FEWSHOT_STATE: dict[str, Rule] = {
    "epoch": integer(0, MAX_COUNT),
    "best": mapping({"epoch": integer(0, MAX_COUNT)}),
    "optimizer": mapping({"param_groups": list_of(mapping(), 1, 1000), "scalars": optional(mapping())}),
}

FEWSHOT_SHOTS: dict[str, Rule] = {
    "train": mapping(values=list_of(text(), 0, MAX_POINTS)),
    "val": optional(mapping(values=list_of(text(), 0, MAX_POINTS))),
    "short_classes": optional(mapping(values=integer(0, MAX_POINTS))),
}

PRETRAIN_STATE: dict[str, Rule] = {
    "format": text(("c2p-pretrain-checkpoint",)),
    "step": integer(0, MAX_COUNT),
    "epoch": integer(0, MAX_COUNT),
    "position": optional(integer(0, MAX_COUNT)),
    "world_size": optional(integer(1, 1_000_000)),
    "config": optional(mapping()),
    "optimizer": mapping({"param_groups": list_of(mapping(), 1, 1000), "scalars": optional(mapping())}),
    "scheduler": mapping(),
}

LATEST: dict[str, Rule] = {"path": text(pattern=CHECKPOINT_NAME)}


def check_fewshot_best(best: dict, path: str | Path, split: str) -> None:
    """The best-so-far record of a few-shot state selecting on `split` ("val" or "test")."""
    check_fields(path, best, {f"{split}_acc": number(-1.0, 1.0), f"{split}_loss": number(0.0, infinite=True)},
                 prefix="best.")


def check_fewshot_config(cfg: Any, path: str | Path) -> dict:
    """A few-shot run's config.json, checked (fields, bounds, views matching num_views)."""
    check_fields(path, cfg, FEWSHOT_CONFIG)
    views = cfg.get("views")
    if views is not None and len(views) != cfg["num_views"]:
        raise RunFileError(path, "views", f"lists {len(views)} views but num_views is {cfg['num_views']}")
    return cfg


def check_adapter_state(state: dict, path: str | Path, cfg: dict) -> None:
    """An adapter checkpoint (best / last.safetensors) against its run's config.json: one row of
    text features per label, of the run's feature width."""
    t = state.get("text_features")
    if t is None:
        raise RunFileError(path, "text_features", "missing (not an adapter checkpoint)")
    if t.ndim != 2:
        raise RunFileError(path, "text_features", f"must be a [classes, dim] matrix, got shape {list(t.shape)}")
    if t.shape[0] != len(cfg["labels"]):
        raise RunFileError(path, "text_features", f"holds {t.shape[0]} classes, but config.json lists {len(cfg['labels'])} labels")
    if cfg.get("dim") is not None and t.shape[1] != cfg["dim"]:
        raise RunFileError(path, "text_features", f"holds {t.shape[1]}-wide features, but config.json says dim {cfg['dim']}")


@contextmanager
def blamed_on(path: str | Path, *kinds: type[Exception]) -> Iterator[None]:
    """Errors of `kinds` raised in the block (building from a run file's values) become one
    RunFileError naming that file."""
    try:
        yield
    except kinds as e:
        raise RunFileError(path, "", str(e)) from None


def check_rng_tensors(tensors: dict, path: str | Path, names: Sequence[str]) -> None:
    """RNG states must be 1-D uint8 tensors of the size this torch uses (torch.set_rng_state raises a
    TypeError or RuntimeError otherwise); a CUDA state may be absent."""
    import torch

    sizes = {"rng.torch": torch.get_rng_state().numel(), "rng.shuffle": torch.Generator().get_state().numel()}
    for name in names:
        t = tensors.get(name)
        if t is None:
            if name == "rng.cuda":
                continue
            raise RunFileError(path, name, "missing")
        if t.dtype != torch.uint8 or t.ndim != 1:
            raise RunFileError(path, name, f"must be a 1-D uint8 RNG state, got {t.dtype} {list(t.shape)}")
        if name in sizes and t.numel() != sizes[name]:
            raise RunFileError(path, name, f"must hold {sizes[name]} bytes, got {t.numel()}")


def checkpoint_folder(root: str | Path) -> Path | None:
    """The checkpoint folder `root/latest.json` names, refused unless it is a `step-N` folder of
    `root` itself (no paths, no links leading out). None when there is no latest.json."""
    from .checkpoints import read_json

    root = Path(root)
    pointer = root / "latest.json"
    if not pointer.is_file():
        return None
    meta = read_json(pointer)
    check_fields(pointer, meta, LATEST)
    folder = root / meta["path"]
    try:
        inside = folder.resolve().parent == root.resolve()
    except OSError:
        inside = False
    if not inside:
        raise RunFileError(pointer, "path", f"{meta['path']!r} leads outside {root}")
    return folder
