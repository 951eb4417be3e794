"""`c2p models`: the open_clip architectures `--model` takes, and this project's tiny test configs."""

from __future__ import annotations

from typing import Annotated

import typer


def models(
    filter_: Annotated[
        str | None, typer.Option("--filter", "-f", help="Only architectures whose name contains this text (any case).")
    ] = None,
    tags: Annotated[
        bool, typer.Option("--tags", "-p", "--pretrained", help="Also list each architecture's weight tags (what --pretrained takes).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """List the architectures `--model` accepts (offline: open_clip's own registry, nothing is downloaded).

    The tiny configs (c2p-tiny, c2p-tiny-rn) come with this project for tests; they have no
    released weights, so use them with --pretrained none. c2p-demo's weights ship with the package
    (a demonstration trained on 13 synthetic shape classes, not CLIP).
    """
    import json

    from ..models.registry import list_architectures

    rows = list_architectures(filter_)
    if as_json:
        typer.echo(json.dumps({"models": rows if tags else [{k: v for k, v in r.items() if k != "pretrained"} for r in rows]}, indent=2))
        return
    if not rows:
        typer.echo(f"no architecture name contains {filter_!r}", err=True)
        raise typer.Exit(1)
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        note = "c2p test config: --pretrained none" if r["tiny"] else ""
        if r["shipped"]:
            note = f"weights ship with clip2point: --pretrained {r['shipped'][0]} (a demo, not CLIP)"
        if tags and r["pretrained"]:
            note = ", ".join(r["pretrained"]) + (f"  ({note})" if note else "")
        typer.echo(f"{r['name'].ljust(width)}  {note}".rstrip())
