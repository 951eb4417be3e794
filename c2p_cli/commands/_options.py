"""The options commands share, each declared once: one flag, one help text, one meaning everywhere.

Choices and bounds come from `clip2point.option_table` (the same table the Python API and the file
validators use): a fixed choice is a `Choice` enum built from the table (typer shows it as `[a|b]`,
completes it, and refuses other values with a usage error; commands receive plain strings, see
clip2point.commands._common); a numeric option carries a bounds callback, so a bad value is a usage
error (exit 2, one line) while the command line is parsed, before any file is read or any model
loads. Options commonly set per machine take their default from a `C2P_*` variable.

`SHARED` holds each shared option's flags and help; the `Annotated` types below are built from it.
Where a command's default depends on what the run brings (an adapter's points, an export's
views), the command leaves the option unset (None) and the help shows that default in words.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from .. import option_table as table
from ..option_table import MAX_SAMPLE_POINTS, MAX_SEED

# ---------------------------------------------------------------------------------------------
# Fixed choices, from the option table
# ---------------------------------------------------------------------------------------------


class Choice(str, Enum):
    """A fixed choice that prints as its value (`f"{Backend.onnx}"` is "onnx")."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


def _choice(enum_name: str, option: str, extra: tuple = ()) -> type[Choice]:
    return Choice(enum_name, [(str(v), str(v)) for v in (*table.choices(option), *extra)])


Backend = _choice("Backend", "backend")
Precision = _choice("Precision", "precision")
OutputFormat = _choice("OutputFormat", "format")
UpAxisChoice = _choice("UpAxisChoice", "up")
SamplingChoice = _choice("SamplingChoice", "sampling")
Fusion = _choice("Fusion", "fusion")
Select = _choice("Select", "select")
Which = _choice("Which", "which")
Split = _choice("Split", "split")
DatasetKind = _choice("DatasetKind", "dataset", tuple(table.DATASET_ALIASES))
Variant = _choice("Variant", "variant")
Optimizer = _choice("Optimizer", "optimizer")
Layout = _choice("Layout", "layout")
RenderBackend = _choice("RenderBackend", "render_backend")
SynthFormat = _choice("SynthFormat", "synth_format")
Colour = _choice("Colour", "colour")
Quantize = _choice("Quantize", "quantize")
LogLevel = _choice("LogLevel", "log_level")

# The help lists the kinds; the aliases (folder names users type) are accepted too.
DATASET_METAVAR = "[" + "|".join(table.choices("dataset")) + "]"
DATASET_HELP = "Dataset layout; auto detects it from the folder (also accepted: modelnet40, modelnet10 and the ModelNet folder names)."
DEVICE_METAVAR = "[auto|cpu|cuda|cuda:N]"

normalise_device = table.normalise_device

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
        from ._messages import cli_flag

        text = error.render(lambda o: flag if o.name == param.name else cli_flag(o))
    else:
        text = str(error)
    return UsageError(text + _source_note(ctx, param))


def _checked(check):
    """A typer callback that runs `check(name, value)` (raising OptionError) and keeps its result."""

    def callback(ctx: typer.Context, param: typer.CallbackParam, value):
        if value is None or ctx.resilient_parsing:  # unset, or shell completion running
            return value
        from ..errors import C2PError

        try:
            checked = check(param.name, value)
        except C2PError as e:
            raise _usage_error(ctx, param, e) from None
        return value if checked is None else checked

    return callback


def between(low: float | None = None, high: float | None = None, *, open_low: bool = False):
    """Callback: the value must lie in [low, high] (or (low, high] with `open_low`)."""

    def check(name, value):
        from ..errors import Opt, OptionError

        if open_low and low is not None and value <= low:
            raise OptionError(Opt(name), f" must be greater than {low:g}, got {value:g}")
        table.check_range(name, value, low, high)

    return _checked(check)


def at_least(low: float):
    return between(low, None)


def in_table(option: str):
    """Callback: the value must be one option `option` of clip2point.option_table may take."""
    return _checked(lambda name, value: table.check(option, value, as_name=name))


check_batch = in_table("batch_size")
check_views = in_table("views")


def _complete_device(incomplete: str):
    return [c for c in ("auto", "cpu", "cuda", "cuda:0", "cuda:1") if c.startswith(incomplete)]


def _complete_label_set(incomplete: str):
    from ..models.prompts import LABEL_SETS

    return [name for name in LABEL_SETS if name.startswith(incomplete.lower())]


# ---------------------------------------------------------------------------------------------
# Shared options: one declaration each
# ---------------------------------------------------------------------------------------------

SHARED: dict[str, dict] = {
    # what classifies
    "labels": dict(flags=("--labels", "-l"), help="Comma-separated class names, e.g. chair,table."),
    "labels_file": dict(flags=("--labels-file",), help="A text file with one label a line (blank lines and # comments skipped)."),
    "label_set": dict(flags=("--label-set",), autocompletion=_complete_label_set,
                      help="Built-in labels: modelnet40, modelnet10, scanobjectnn, shapenet55 (see `c2p label-sets`)."),
    "templates": dict(flags=("--prompt",), help="Prompt template with {} for the label; repeatable (features averaged). "
                                                "Default: 'image of a {}' (the official prompt)."),
    "model": dict(flags=("--model", "-m"), envvar="C2P_MODEL",
                  help="open_clip architecture (e.g. ViT-B-32, or c2p-tiny for tests; see `c2p models`)."),
    "pretrained": dict(flags=("--pretrained",), envvar="C2P_PRETRAINED",
                       help="open_clip weights tag (e.g. openai), a local .bin/.pt/.safetensors file, or 'none' for random weights."),
    "depth_encoder": dict(flags=("--depth-encoder",), envvar="C2P_DEPTH_ENCODER",
                          help="Weights of the depth encoder (c2p pretrain output, or the official CLIP2Point checkpoint)."),
    "adapter": dict(flags=("--adapter",),
                    help="A `c2p fewshot` run folder (brings its model, labels, prompts, views and read settings), or the "
                         "official CLIP2Point few-shot checkpoint (.pth: --model/--pretrained name its CLIP, --labels/--label-set "
                         "its classes, default ModelNet40)."),
    "which": dict(flags=("--which",), case_sensitive=False, help="Weights of an --adapter run: best or last."),
    "backend": dict(flags=("--backend",), case_sensitive=False, show_default="torch, or what --engine holds",
                    help="torch, onnx (ONNX Runtime) or trt (TensorRT engine)."),
    "engine": dict(flags=("--engine",),
                   help="A `c2p export` folder or a lone classifier .onnx (brings its model, labels, prompts and views; "
                        "--backend follows what it holds)."),
    # how files become clouds
    "views": dict(flags=("--views",), callback=check_views, help="Number of fixed views: 6 (the zero-shot preset) or 10 (few-shot)."),
    "n_points": dict(flags=("--points",), callback=in_table("n_points"), help=f"Points sampled per shape (1 to {MAX_SAMPLE_POINTS:,})."),
    "sampling": dict(flags=("--sampling",), case_sensitive=False, help="random (seeded) or fps (farthest point sampling)."),
    "up": dict(flags=("--up",), case_sensitive=False,
               help="The shapes' up axis: z (ModelNet, scanners, CAD: rotated like the paper's ModelNet) or y (ShapeNet-style)."),
    "seed": dict(flags=("--seed",), callback=in_table("seed"), help=f"Random seed, 0 to {MAX_SEED} (sampling, splits, training)."),
    "max_points": dict(flags=("--max-points",), callback=in_table("max_points"),
                       help="The most points (or vertices, triangles) a file may declare; larger files fail with an error."),
    "bin_columns": dict(flags=("--bin-columns",), callback=in_table("bin_columns"),
                        help="float32 columns per point of .bin scans (KITTI 4, nuScenes 5)."),
    # how the run goes
    "device": dict(flags=("--device",), envvar="C2P_DEVICE", metavar=DEVICE_METAVAR, callback=in_table("device"),
                   autocompletion=_complete_device, help="Where the model runs: auto (CUDA when available), cpu, cuda or cuda:N."),
    "precision": dict(flags=("--precision",), case_sensitive=False,
                      help="Encoder precision: fp32, fp16 / bf16 (autocast on CUDA; the projection stays fp32) or auto."),
    "batch_size": dict(flags=("--batch-size", "-b"), envvar="C2P_BATCH_SIZE", callback=check_batch,
                       help="Shapes per batch (per process under torchrun)."),
    "workers": dict(flags=("--workers",), envvar="C2P_WORKERS", callback=in_table("workers"),
                    show_default="one per CPU core available, less one",
                    help="Reader processes (0 reads in-process; at most 2 per CPU core)."),
    "top_k": dict(flags=("--top-k",), callback=in_table("top_k"),
                  help="How many of the most probable labels to report per file (eval: and their top-k accuracy)."),
    # which files a path, folder or pattern stands for (clip2point.engine.inputs.gather_inputs)
    "recursive": dict(flags=("--recursive", "-r"), help="Descend into sub-folders."),
    "extensions": dict(flags=("--ext",), help="Only these extensions in folders and patterns, e.g. ply,npy."),
    "overwrite": dict(flags=("--overwrite",), help="Replace an existing output (without it, an existing output is refused)."),
    "quiet": dict(flags=("--quiet", "-q"), help="No progress and no table (failed files are still listed on stderr)."),
}


def option(name: str, **override) -> typer.models.OptionInfo:
    """The typer option of shared option `name` (`override`: what differs for one use, e.g. show_default)."""
    spec = {**SHARED[name], **override}
    return typer.Option(*spec.pop("flags"), **spec)


def output(help: str, **kw) -> typer.models.OptionInfo:
    """`--output/-o` (with `--out` as an alias), the one spelling of every command's output."""
    return typer.Option("--output", "-o", "--out", help=help, **kw)


def _own(value) -> str:
    return f"{value}, or the --adapter's / --engine's own"


Labels = Annotated[str | None, option("labels")]
LabelsFile = Annotated[Path | None, option("labels_file")]
LabelSet = Annotated[str | None, option("label_set")]
Prompt = Annotated[list[str] | None, option("templates")]
Model = Annotated[str, option("model")]
Pretrained = Annotated[str, option("pretrained")]
DepthEncoderPath = Annotated[Path | None, option("depth_encoder")]
Adapter = Annotated[Path | None, option("adapter")]
WhichOption = Annotated[Which, option("which")]
BackendOption = Annotated[Backend | None, option("backend")]
Engine = Annotated[Path | None, option("engine")]
Views = Annotated[int, option("views")]
RunViews = Annotated[int | None, option("views", show_default=_own(table.default("views")))]
Points = Annotated[int, option("n_points")]
RunPoints = Annotated[int | None, option("n_points", show_default=_own(table.default("n_points")))]
Sampling = Annotated[SamplingChoice, option("sampling")]
RunSampling = Annotated[SamplingChoice | None, option("sampling", show_default="the adapter's or the dataset's, else random")]
UpAxis = Annotated[UpAxisChoice, option("up")]
RunUp = Annotated[UpAxisChoice | None, option("up", show_default="the adapter's or the dataset's, else z")]
Seed = Annotated[int, option("seed")]
MaxPoints = Annotated[int, option("max_points")]
BinColumns = Annotated[int, option("bin_columns")]
Device = Annotated[str, option("device")]
PrecisionOption = Annotated[Precision, option("precision")]
BatchSize = Annotated[int, option("batch_size")]
Workers = Annotated[int | None, option("workers")]
TopK = Annotated[int, option("top_k")]
Recursive = Annotated[bool, option("recursive")]
Extensions = Annotated[str | None, option("extensions")]
Overwrite = Annotated[bool, option("overwrite")]
Quiet = Annotated[bool, option("quiet")]

# Options of the run description (clip2point.run_spec) and the option-table names of their CLI parameters.
RUN_OPTIONS = ("labels", "labels_file", "label_set", "templates", "model", "pretrained", "depth_encoder", "adapter",
               "which", "backend", "engine", "views", "n_points", "sampling", "up", "seed", "max_points", "bin_columns",
               "precision", "batch_size", "top_k", "workers", "device")


def run_options(values: dict) -> dict:
    """The run-description options among a command's parameters (clip2point.run_spec.describe_run takes them)."""
    return {k: v for k, v in values.items() if k in RUN_OPTIONS}
