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

# (command name, module under c2p_cli.commands, function name)
COMMANDS = [
    ("classify", "classify", "classify"),
    ("render", "render", "render"),
    ("synth", "synth", "synth"),
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
    _mod = importlib.import_module(f"c2p_cli.commands.{_module}")
    app.command(_name)(getattr(_mod, _func))


def main() -> None:
    from .errors import C2PError

    try:
        app(standalone_mode=False)
    except C2PError as e:
        if os.environ.get("C2P_DEBUG"):
            raise
        from rich.console import Console

        Console(stderr=True).print(f"[bold red]error:[/] {e}", highlight=False, markup=True, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:  # click's usage errors come through standalone_mode=False as click exceptions
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            sys.exit(130)
        raise


if __name__ == "__main__":
    main()
