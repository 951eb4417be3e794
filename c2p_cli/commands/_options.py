"""Option types shared by several commands, so that each default, choice list and bound exists once.

Fixed choices are `Choice` enums (typer shows them as `[a|b]`, completes them, and refuses other
values with a usage error); the CLI hands commands their plain string values (see
clip2point.commands._common). Numeric options carry a bounds callback: a bad value is a usage
error (exit 2, one line) while the command line is parsed, before any file is read or any model
loads. Options that are commonly set per machine take their default from a `C2P_*` variable.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from .. import defaults, limits

# ---------------------------------------------------------------------------------------------
# Fixed choices
# ---------------------------------------------------------------------------------------------


class Choice(str, Enum):
    """A fixed choice that prints as its value (`f"{Backend.onnx}"` is "onnx")."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class Backend(Choice):
    torch = "torch"
    onnx = "onnx"
    trt = "trt"


class Precision(Choice):
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


class OutputFormat(Choice):
    jsonl = "jsonl"
    csv = "csv"
    json = "json"
    table = "table"


class UpAxisChoice(Choice):
    z = "z"
    y = "y"


class SamplingChoice(Choice):
    random = "random"
    fps = "fps"


class Fusion(Choice):
    gated = "gated"
    mean = "mean"


class Select(Choice):
    last = "last"
    val = "val"
    test = "test"


class Which(Choice):
    best = "best"
    last = "last"


class Split(Choice):
    train = "train"
    test = "test"


class DatasetKind(Choice):
    """clip2point.training.datasets.KINDS, then its KIND_ALIASES (tests/cli/test_conventions.py keeps them in step)."""

    auto = "auto"
    synth = "synth"
    modelnet = "modelnet"
    modelnet_h5 = "modelnet-h5"
    modelnet_resampled = "modelnet-resampled"
    modelnet40_ply = "modelnet40-ply"
    scanobjectnn = "scanobjectnn"
    folder = "folder"
    modelnet40 = "modelnet40"
    modelnet10 = "modelnet10"
    modelnet40_ply_hdf5_2048 = "modelnet40_ply_hdf5_2048"
    modelnet40_normal_resampled = "modelnet40_normal_resampled"
    modelnet40_ply_folder = "modelnet40_ply"


# The help lists the kinds; the aliases (folder names users type) are accepted too.
DATASET_METAVAR = "[auto|synth|modelnet|modelnet-h5|modelnet-resampled|modelnet40-ply|scanobjectnn|folder]"
DATASET_HELP = "Dataset layout; auto detects it from the folder (also accepted: modelnet40, modelnet10 and the ModelNet folder names)."


class Variant(Choice):
    obj_bg = "obj_bg"
    obj_only = "obj_only"
    pb_t50_rs = "pb_t50_rs"


class Optimizer(Choice):
    adamw = "adamw"
    lamb = "lamb"


class Layout(Choice):
    auto = "auto"
    c2p = "c2p"
    clip2point = "clip2point"


class RenderBackend(Choice):
    auto = "auto"
    triton = "triton"
    torch = "torch"


class SynthFormat(Choice):
    ply = "ply"
    npy = "npy"
    off = "off"


class Colour(Choice):
    grey = "grey"
    random = "random"


class Quantize(Choice):
    none = "none"
    int8 = "int8"


class LogLevel(Choice):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


# --device takes a kind or a numbered GPU: shown as choices, checked here, resolved by clip2point.distributed.
DEVICE_KINDS = ("auto", "cpu", "cuda")
DEVICE_METAVAR = "[auto|cpu|cuda|cuda:N]"


def normalise_device(spec: str) -> str | None:
    """The device spec in canonical form (`auto`, `cpu`, `cuda`, `cuda:N`), or None when it is none of them."""
    text = str(spec).strip().lower()
    if text in DEVICE_KINDS:
        return text
    kind, _, index = text.partition(":")
    if kind == "cuda" and index.isdigit():
        return f"cuda:{int(index)}"
    return None


# ---------------------------------------------------------------------------------------------
# Callbacks: bounds checked while the command line is parsed
# ---------------------------------------------------------------------------------------------


def _flag(param) -> str:
    """The long flag of a click parameter (`--batch-size`), or its metavar for an argument."""
    longs = [o for o in getattr(param, "opts", []) if o.startswith("--")]
    return longs[0] if longs else (getattr(param, "opts", None) or [param.name])[0]


def _source_note(ctx, param) -> str:
    """` (from $C2P_X)` when the value came from an environment variable, so the user knows where to look."""
    try:
        source = ctx.get_parameter_source(param.name)
    except Exception:  # older click without parameter sources
        return ""
    if source is not None and getattr(source, "name", "") == "ENVIRONMENT":
        envvar = param.envvar if isinstance(param.envvar, str) else (param.envvar or [""])[0]
        return f" (from ${envvar})"
    return ""


def _usage_error(ctx, param, error) -> Exception:
    """A UsageError whose text names this parameter by its flag (library errors name Python options)."""
    from ..errors import OptionError, UsageError

    flag = _flag(param)
    if isinstance(error, OptionError):
        # (the core may not import clip2point.commands: other options are spelled plainly)
        text = error.render(lambda o: flag if o.name == param.name else "--" + o.name.replace("_", "-"))
    else:
        text = str(error)
    return UsageError(text + _source_note(ctx, param))


def _checked(check):
    """A typer callback that runs `check(value)` (raising OptionError) and keeps the value."""

    def callback(ctx: typer.Context, param: typer.CallbackParam, value):
        if value is None or ctx.resilient_parsing:  # unset, or shell completion running
            return value
        from ..errors import C2PError

        try:
            check(param.name, value)
        except C2PError as e:
            raise _usage_error(ctx, param, e) from None
        return value

    return callback


def between(low: float | None = None, high: float | None = None, *, open_low: bool = False):
    """Callback: the value must lie in [low, high] (or (low, high] with `open_low`)."""

    def check(name, value):
        from ..errors import Opt, OptionError

        if open_low and low is not None and value <= low:
            raise OptionError(Opt(name), f" must be greater than {low:g}, got {value:g}")
        limits.check_range(name, value, low, high)

    return _checked(check)


def at_least(low: float):
    return between(low, None)


check_points = _checked(lambda name, v: limits.check_points(v, name))
# (the limits functions name the option "seed" / "workers", as these parameters are called)
check_seed = _checked(lambda name, v: limits.check_seed(v))
check_workers = _checked(lambda name, v: limits.check_workers(v))
check_batch = between(1, limits.MAX_BATCH)


def _check_views(name, value):
    from ..views import view_preset

    view_preset(value)


check_views = _checked(_check_views)


def _device_callback(ctx: typer.Context, param: typer.CallbackParam, value):
    if value is None or ctx.resilient_parsing:
        return value
    canonical = normalise_device(value)
    if canonical is None:
        from ..errors import UsageError

        raise UsageError(f"{_flag(param)} must be one of auto, cpu, cuda, cuda:N, got {value!r}{_source_note(ctx, param)}")
    return canonical


def _complete_device(incomplete: str):
    return [c for c in ("auto", "cpu", "cuda", "cuda:0", "cuda:1") if c.startswith(incomplete)]


def _complete_label_set(incomplete: str):
    from ..models.prompts import LABEL_SETS

    return [name for name in LABEL_SETS if name.startswith(incomplete.lower())]


# ---------------------------------------------------------------------------------------------
# Shared options
# ---------------------------------------------------------------------------------------------

Model = Annotated[
    str,
    typer.Option("--model", "-m", envvar="C2P_MODEL", help="open_clip architecture (e.g. ViT-B-32, or c2p-tiny for tests; see `c2p models`)."),
]
Pretrained = Annotated[
    str,
    typer.Option(
        "--pretrained",
        envvar="C2P_PRETRAINED",
        help="open_clip weights tag (e.g. openai), a local .bin/.pt/.safetensors file, or 'none' for random weights.",
    ),
]
DepthEncoderPath = Annotated[
    Path | None,
    typer.Option(
        "--depth-encoder",
        envvar="C2P_DEPTH_ENCODER",
        help="Weights of the depth encoder (c2p pretrain output, or the official CLIP2Point checkpoint).",
        dir_okay=True,
    ),
]
Views = Annotated[int, typer.Option("--views", help="Number of fixed views: 6 (zero-shot default) or 10.", callback=check_views)]
Device = Annotated[
    str,
    typer.Option(
        "--device", envvar="C2P_DEVICE", metavar=DEVICE_METAVAR, callback=_device_callback, autocompletion=_complete_device,
        help="Where the model runs: auto (CUDA when available), cpu, cuda or cuda:N.",
    ),
]
Labels = Annotated[str | None, typer.Option("--labels", "-l", help="Comma-separated class names, e.g. chair,table.")]
LabelSet = Annotated[
    str | None,
    typer.Option(
        "--label-set", autocompletion=_complete_label_set,
        help="Built-in labels: modelnet40, modelnet10, scanobjectnn, shapenet55 (see `c2p label-sets`).",
    ),
]
Prompt = Annotated[
    list[str] | None,
    typer.Option("--prompt", help=f"Prompt template with {{}} for the label; repeatable (features averaged). Default: '{defaults.PROMPT_TEMPLATE}'."),
]
Points = Annotated[
    int, typer.Option("--points", help=f"Points sampled per shape (1 to {limits.MAX_SAMPLE_POINTS:,}).", callback=check_points)
]
Sampling = Annotated[SamplingChoice, typer.Option("--sampling", help="random (seeded) or fps (farthest point sampling).", case_sensitive=False)]
UpAxis = Annotated[
    UpAxisChoice,
    typer.Option(
        "--up", case_sensitive=False,
        help="The shapes' up axis: z (ModelNet, scanners, CAD: rotated like the paper's ModelNet) or y (ShapeNet-style).",
    ),
]
Seed = Annotated[int, typer.Option("--seed", help=f"Random seed, 0 to {limits.MAX_SEED} (sampling, splits, training).", callback=check_seed)]
BatchSize = Annotated[
    int, typer.Option("--batch-size", "-b", envvar="C2P_BATCH_SIZE", help="Shapes per batch.", callback=check_batch)
]
Workers = Annotated[
    int | None,
    typer.Option(
        "--workers", envvar="C2P_WORKERS", callback=check_workers,
        help="Reader processes (0 reads in-process; at most 2 per CPU core). Default: chosen from the CPU cores.",
    ),
]
MaxPoints = Annotated[
    int,
    typer.Option(
        "--max-points", callback=at_least(1),
        help="The most points (or vertices, triangles) a file may declare; larger files fail with an error.",
    ),
]
BinColumns = Annotated[
    int,
    typer.Option("--bin-columns", callback=between(3, 64), help="float32 columns per point of .bin scans (KITTI 4, nuScenes 5)."),
]

# ---------------------------------------------------------------------------------------------
# Which files a path, folder or pattern stands for (clip2point.engine.inputs.gather_inputs)
# ---------------------------------------------------------------------------------------------

Recursive = Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-folders.")]
Extensions = Annotated[str | None, typer.Option("--ext", help="Only these extensions in folders and patterns, e.g. ply,npy.")]
