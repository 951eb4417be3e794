"""Every option's choices, bounds and defaults, once: the CLI, the Python API and the file validators read them here.

`OPTIONS` maps an option's Python name (the name the library, the API and run files use) to its
`Option`: a default, the values it may take (`choices`) or the range (`low`, `high`). The CLI
builds its choice lists and bounds callbacks from it (clip2point.commands._options), the Python API
and `clip2point.run_spec` take their defaults and checks from it, and the validators of run
folders (clip2point.store.run_files) and exported graphs (clip2point.export.metadata) take their
bounds from the constants below, so that no two places disagree about what is allowed.

Standard library only: the CLI checks its options before torch is imported. Each check raises
`OptionError` naming the Python option (the CLI prints its flag).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from . import defaults
from .errors import Opt, OptionError

# Points sampled per shape. A 224 x 224 depth map has 50,176 pixels per view, so a million points
# already cover every pixel many times over; more only costs memory (12 bytes per point per cloud,
# times the batch), and a billion asked of a mesh sampler is 7+ GiB before the first file.
MAX_SAMPLE_POINTS = 1_000_000
# numpy's legacy seeding and most samplers take 32-bit seeds; negative seeds fail in numpy.
MAX_SEED = 2**32 - 1
# Shapes per batch: the exported graphs' dynamic batch dimension ends at 2**16.
MAX_BATCH = 1 << 16
# Views a run folder or an exported graph may record (the presets have 6 and 10): more would only
# ask for huge layers (an adapter's first layer is views x width x width).
MAX_VIEWS = 64
# Labels of one classifier, and label columns of .bin scans.
MAX_LABELS = 100_000
MAX_BIN_COLUMNS = 64
# Reader processes per CPU core: more only adds processes that wait for a core.
WORKERS_PER_CORE = 2
MIN_WORKER_CAP = 4

DEVICE_KINDS = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Option:
    """What one option may be: `choices`, or a number in [low, high] (an open end is None)."""

    default: object = None
    choices: tuple = ()
    low: float | None = None
    high: float | None = None


OPTIONS: dict[str, Option] = {
    # what classifies
    "model": Option(defaults.MODEL),
    "pretrained": Option(defaults.PRETRAINED),
    "backend": Option("torch", ("torch", "onnx", "trt")),
    "which": Option("best", ("best", "last")),
    "precision": Option("fp32", ("fp32", "fp16", "bf16", "auto")),
    "graph_precision": Option(None, ("float32", "int8")),  # of an exported ONNX graph
    "views": Option(defaults.ZERO_SHOT_VIEWS, (defaults.ZERO_SHOT_VIEWS, defaults.FEW_SHOT_VIEWS)),
    # how files become clouds
    "n_points": Option(defaults.NUM_POINTS, low=1, high=MAX_SAMPLE_POINTS),
    "sampling": Option("random", ("random", "fps")),
    "up": Option(defaults.UP_AXIS, ("z", "y")),
    "seed": Option(0, low=0, high=MAX_SEED),
    "max_points": Option(defaults.MAX_POINTS, low=1),
    "bin_columns": Option(defaults.BIN_COLUMNS, low=3, high=MAX_BIN_COLUMNS),
    # how the run goes
    "batch_size": Option(32, low=1, high=MAX_BATCH),
    "top_k": Option(3, low=1),
    "workers": Option(None, low=0),  # high: max_workers(), which depends on the machine
    "device": Option("auto", DEVICE_KINDS),  # and cuda:N
    "format": Option(None, ("jsonl", "csv", "json", "table")),
    # evaluation and training
    "split": Option("test", ("train", "test")),
    "dataset": Option("auto", ("auto", "synth", "modelnet", "modelnet-h5", "modelnet-resampled", "modelnet40-ply",
                               "scanobjectnn", "folder")),
    "variant": Option(None, ("obj_bg", "obj_only", "pb_t50_rs")),
    "fusion": Option("gated", ("gated", "mean")),
    "select": Option("last", ("last", "val", "test")),
    "optimizer": Option("lamb", ("adamw", "lamb")),
    "layout": Option("auto", ("auto", "c2p", "clip2point")),
    "render_backend": Option("auto", ("auto", "torch", "triton")),
    "quantize": Option("none", ("none", "int8")),
    "synth_format": Option("ply", ("ply", "npy", "off")),
    "colour": Option("grey", ("grey", "random")),
    "log_level": Option(None, ("debug", "info", "warning", "error")),
}
# Folder names users give for a dataset kind; they select the same readers.
DATASET_ALIASES = {
    "modelnet40": "modelnet",
    "modelnet10": "modelnet",
    "modelnet40_ply_hdf5_2048": "modelnet-h5",
    "modelnet40_normal_resampled": "modelnet-resampled",
    "modelnet40_ply": "modelnet40-ply",
}


def choices(name: str) -> tuple:
    """The values option `name` may take."""
    return OPTIONS[name].choices


def default(name: str):
    """Option `name`'s default."""
    return OPTIONS[name].default


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def max_workers() -> int:
    """The most reader processes allowed here: two per usable core, at least 4."""
    return max(MIN_WORKER_CAP, WORKERS_PER_CORE * usable_cpus())


def _num(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def check_range(name: str, value: float, low: float | None = None, high: float | None = None, why: str = "") -> None:
    """OptionError `name must be ...` when `value` is outside [low, high] (either end open when None)."""
    if value is None:
        return
    if (low is None or value >= low) and (high is None or value <= high):
        return
    if low is not None and high is not None:
        want = f" must be between {_num(low)} and {_num(high)}"
    elif low is not None:
        want = f" must be at least {_num(low)}"
    else:
        want = f" must be at most {_num(high)}"
    raise OptionError(Opt(name), f"{want}{why}, got {_num(value)}")


def normalise_device(spec: str) -> str | None:
    """The device spec in canonical form (`auto`, `cpu`, `cuda`, `cuda:N`), or None when it is none of them."""
    text = str(spec).strip().lower()
    if text in DEVICE_KINDS:
        return text
    kind, _, index = text.partition(":")
    if kind == "cuda" and index.isdigit():
        return f"cuda:{int(index)}"
    return None


def check(name: str, value, *, as_name: str | None = None):
    """`value` if option `name` may take it (None, unset, always may), else OptionError naming
    `as_name` (default `name`). Whole numbers are checked to be whole numbers; the device spec is
    returned in its canonical form."""
    shown = as_name or name
    if value is None:
        return None
    if name == "device":
        canonical = normalise_device(value)
        if canonical is None:
            raise OptionError(Opt(shown), f" must be one of auto, cpu, cuda, cuda:N, got {value!r}")
        return canonical
    if name == "workers":
        check_workers(value, shown)
        return value
    option = OPTIONS[name]
    if option.choices:
        if value not in option.choices:
            listed = ", ".join(map(str, option.choices))
            raise OptionError(Opt(shown), f" must be one of {listed}, got {value!r}")
        return value
    if option.low is not None or option.high is not None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise OptionError(Opt(shown), f" must be a whole number, got {value!r}")
        check_range(shown, value, option.low, option.high)
    return value


def check_workers(workers: int | None, name: str = "workers") -> None:
    """0 (read in-process) up to `max_workers()`; None means the default and is always fine."""
    if workers is None:
        return
    if isinstance(workers, bool) or not isinstance(workers, int):
        raise OptionError(Opt(name), f" must be a whole number, got {workers!r}")
    check_range(name, workers, 0, max_workers(), f" ({WORKERS_PER_CORE} per usable CPU core, {usable_cpus()} here)")


def check_points(n_points: int | None, name: str = "n_points") -> None:
    """1 up to MAX_SAMPLE_POINTS points per shape."""
    check("n_points", n_points, as_name=name)


def check_seed(seed: int | None, name: str = "seed") -> None:
    """0 up to 2**32 - 1."""
    check("seed", seed, as_name=name)
