"""`c2p label-sets`: the built-in label sets (--label-set) and the names in each."""

from __future__ import annotations

from typing import Annotated

import typer


def label_sets(
    name: Annotated[str | None, typer.Argument(help="Print this set's labels, one per line, in class-index order.", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """List the built-in label sets, or the labels of one (the strings the prompts are made from)."""
    import json

    from ..models import prompts

    sets = prompts.LABEL_SETS  # read at run time: shows whatever the sets are in this version
    if name is not None:
        labels = prompts.resolve_labels(None, name)
        if as_json:
            typer.echo(json.dumps({"name": name, "labels": labels}, indent=2))
        else:
            typer.echo("\n".join(labels))
        return
    if as_json:
        typer.echo(json.dumps({key: list(values) for key, values in sets.items()}, indent=2))
        return
    width = max(len(k) for k in sets)
    for key, values in sets.items():
        preview = ", ".join(values[:6]) + (", ..." if len(values) > 6 else "")
        typer.echo(f"{key.ljust(width)}  {len(values):>3} labels  {preview}")
