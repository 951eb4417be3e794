"""The `c2p` command: wires one module per command and turns library errors into one line.

Commands are imported here, but each keeps its heavy imports (torch, open_clip, open3d, triton,
onnxruntime, tensorrt) inside the function body, so `c2p --help` stays fast and light.
Every command gets -h/--help, --verbose/-v and --log-level (clip2point.commands._common), and its
help ends with the examples below. Set C2P_DEBUG=1 to see the full traceback of an error.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

from . import __version__
from .commands._common import LogLevelOption, Verbose, configure_logging, plain, with_common_options

CONTEXT = {"help_option_names": ["-h", "--help"]}

# (command name, module under clip2point.commands, function name, examples: (command line, comment))
COMMANDS = [
    ("classify", "classify", "classify", [
        ("c2p classify scans/ -r --label-set modelnet40", "zero-shot, the 40 ModelNet classes"),
        ("c2p classify chair.ply mug.obj --labels chair,mug,table -o results.jsonl", ""),
        ("c2p classify scans/ --backend onnx --engine exported/", "a `c2p export` folder, ONNX Runtime"),
    ]),
    ("render", "render", "render", [
        ("c2p render chair.ply -o views.png", "the 6 zero-shot views, 3 x 2"),
        ("c2p render scans/ 'more/*.ply' --out-dir views/", "one montage per file"),
        ("c2p render scans/ --views 10 --format npy --out-dir maps/", "the maps as float32 arrays"),
    ]),
    ("synth", "synth", "synth", [
        ("c2p synth data/", "every shape class, 20 train + 5 test files each"),
        ("c2p synth data/ --classes cube,torus --per-class 8 --format off", ""),
        ("c2p synth pairs/ --pairs", "image-depth pairs for c2p pretrain"),
    ]),
    ("export", "export", "export", [
        ("c2p export -o exported/ --label-set modelnet40", "classifier.onnx, checked against torch"),
        ("c2p export -o exported/ --labels chair,table --with-projection --quantize int8", "+ points graph, int8 encoder"),
        ("c2p export -o exported-fewshot/ --adapter runs/16shot --trt", "TensorRT FP16 engine too"),
    ]),
    ("fewshot", "fewshot", "fewshot", [
        ("c2p fewshot data/modelnet40_ply_hdf5_2048 -o runs/16shot -k 16", "GDPA, 16 shots per class"),
        ("c2p fewshot data/ -o runs/dpa --fusion mean --select last --epochs 50", ""),
    ]),
    ("eval", "eval", "eval_cmd", [
        ("c2p eval data/modelnet40_ply_hdf5_2048 -o reports/zero-shot", "zero-shot top-1 on the test split"),
        ("c2p eval data/ScanObjectNN -o reports/few-shot --adapter runs/16shot --variant pb_t50_rs", ""),
    ]),
    ("make-pairs", "make_pairs", "make_pairs", [
        ("c2p make-pairs ModelNet40/ pairs/", "renders + points of every mesh"),
        ("c2p make-pairs meshes/ pairs/ --colour random --points 4096", ""),
    ]),
    ("pretrain", "pretrain", "pretrain", [
        ("c2p pretrain pairs/ runs/pretrain --epochs 10 --batch-size 64", ""),
        ("torchrun --nproc_per_node 4 -m clip2point pretrain pairs/ runs/pretrain --optimizer lamb", "4 GPUs"),
        ("c2p pretrain pairs/ runs/pretrain --resume", "continue after Ctrl-C"),
    ]),
    ("models", "models", "models", [
        ("c2p models", "every open_clip architecture, tiny test configs marked"),
        ("c2p models --filter ViT-B --tags", "with the weight tags open_clip knows"),
    ]),
    ("label-sets", "label_sets", "label_sets", [
        ("c2p label-sets", "the built-in sets and their sizes"),
        ("c2p label-sets modelnet10", "the names of one set, one per line"),
    ]),
    ("env", "env", "env", [
        ("c2p env", "versions and usable backends, to paste into a bug report"),
        ("c2p env --json", ""),
    ]),
]

CACHE_EXAMPLES = [
    ("c2p cache ls", "each cache with its files and size"),
    ("c2p cache rm text_features", "or --all"),
    ("c2p cache prune --older-than 30 --max-size 2G", ""),
]


def examples_epilog(examples) -> str:
    """The help's closing 'Examples' block (rich markup; comments dimmed)."""
    from rich.markup import escape

    width = max(len(cmd) for cmd, _ in examples)
    lines = [f"  {escape(cmd).ljust(width)}  [dim]# {escape(note)}[/]" if note else f"  {escape(cmd)}" for cmd, note in examples]
    return "[bold]Examples[/]\n" + "\n".join(lines)


app = typer.Typer(
    name="c2p",
    help="CLIP2Point: classify point clouds and meshes with CLIP, zero-shot or from a few examples.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings=CONTEXT,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"c2p {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    verbose: Verbose = 0,
    log_level: LogLevelOption = None,
) -> None:
    """CLIP2Point command-line tool."""
    configure_logging(verbose, plain(log_level))


for _name, _module, _func, _examples in COMMANDS:
    _mod = importlib.import_module(f"clip2point.commands.{_module}")
    app.command(_name, epilog=examples_epilog(_examples), context_settings=CONTEXT)(with_common_options(getattr(_mod, _func)))

_cache = importlib.import_module("clip2point.commands.cache")
app.add_typer(_cache.build_app(with_common_options, examples_epilog, examples_epilog(CACHE_EXAMPLES), CONTEXT), name="cache")


def main() -> None:
    from .commands._messages import cli_text
    from .errors import C2PError

    try:
        # standalone_mode=False lets C2PError reach us; click then returns exit codes instead of exiting.
        # prog_name: usage lines and shell completion say `c2p`, also under `python -m clip2point`
        rv = app(standalone_mode=False, prog_name="c2p")
    except C2PError as e:
        if os.environ.get("C2P_DEBUG"):
            raise
        from rich.console import Console
        from rich.text import Text

        Console(stderr=True).print(Text.assemble(("error: ", "bold red"), cli_text(e)), soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:
        # Usage errors from click, or from the copy of click that newer typer releases vendor
        # (typer._click): match by class name, not by import, to cover both.
        names = {cls.__name__ for cls in type(e).__mro__}
        if "ClickException" in names:
            if "NoArgsIsHelpError" in names or not hasattr(e, "format_message"):
                e.show()  # the help text itself
            else:
                _usage_line(e)
            sys.exit(getattr(e, "exit_code", 2))
        if "Abort" in names:
            sys.exit(130)
        raise
    sys.exit(rv if isinstance(rv, int) else 0)


def _usage_line(e) -> None:
    """A command-line mistake as one line, like every other error, with where to find the help."""
    from rich.console import Console
    from rich.text import Text

    message = " ".join(e.format_message().split()).replace("Value error, ", "")
    ctx = getattr(e, "ctx", None)
    hint = f" (see '{ctx.command_path} -h')" if ctx is not None and getattr(ctx, "command_path", None) else ""
    Console(stderr=True).print(Text.assemble(("error: ", "bold red"), message, hint), soft_wrap=True)


if __name__ == "__main__":
    main()
