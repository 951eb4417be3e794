"""The `c2p` command: wires one module per command and turns library errors into one line.

Commands are imported here, but each keeps its heavy imports (torch, open_clip, open3d, triton,
onnxruntime, tensorrt) inside the function body, so `c2p --help` stays fast and light.
Set C2P_DEBUG=1 to see the full traceback of an error.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

from . import __version__

# (command name, module under clip2point.commands, function name)
COMMANDS = [
    ("classify", "classify", "classify"),
    ("render", "render", "render"),
    ("synth", "synth", "synth"),
    ("export", "export", "export"),
    ("fewshot", "fewshot", "fewshot"),
    ("eval", "eval", "eval_cmd"),
    ("make-pairs", "make_pairs", "make_pairs"),
    ("pretrain", "pretrain", "pretrain"),
]

app = typer.Typer(
    name="c2p",
    help="CLIP2Point: classify point clouds and meshes with CLIP, zero-shot or from a few examples.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"c2p {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """CLIP2Point command-line tool."""


for _name, _module, _func in COMMANDS:
    _mod = importlib.import_module(f"clip2point.commands.{_module}")
    app.command(_name)(getattr(_mod, _func))


def main() -> None:
    from .commands._messages import cli_text
    from .errors import C2PError

    try:
        # standalone_mode=False lets C2PError reach us; click then returns exit codes instead of exiting.
        rv = app(standalone_mode=False)
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
            e.show()
            sys.exit(getattr(e, "exit_code", 2))
        if "Abort" in names:
            sys.exit(130)
        raise
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
