"""`c2p cache ls|rm|prune`: the text and feature caches under $C2P_CACHE_DIR, with their sizes."""

from __future__ import annotations

from typing import Annotated

import typer

from ..store.caches import MAX_AGE_DAYS
from ._options import between

EXAMPLES = {
    "ls": [("c2p cache ls", "each cache with its files and size"), ("c2p cache ls --json", "")],
    "rm": [("c2p cache rm text_features", "one cache"), ("c2p cache rm --all", "every cache")],
    "prune": [
        ("c2p cache prune --older-than 30", "files unused for 30 days"),
        ("c2p cache prune --max-size 2G --dry-run", "what would go to keep 2 GiB"),
    ],
}


def ls(as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False) -> None:
    """List the caches (text features, few-shot features, pre-training image features) with their sizes."""
    import json
    import time

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from ..store.caches import human_size, scan_caches

    folder = scan_caches()
    root, caches = folder.root, folder.caches
    if as_json:
        typer.echo(json.dumps({"root": str(root), "bytes": sum(c.size for c in caches),
                               "caches": [c.to_dict() for c in caches], "not_c2p": folder.not_c2p}, indent=2))  # fmt: skip
        return
    caption = None
    if folder.not_c2p:
        shown = ", ".join(folder.not_c2p[:5]) + (", ..." if len(folder.not_c2p) > 5 else "")
        caption = Text(f"{len(folder.not_c2p)} other entries are not c2p's and are left alone: {shown}")
    table = Table(title=Text(f"cache folder {root}"), title_justify="left", caption=caption, caption_justify="left")
    for name, justify in (("cache", "left"), ("files", "right"), ("size", "right"), ("last used", "left"), ("holds", "left")):
        table.add_column(name, justify=justify)
    for c in caches:
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(c.last_used)) if c.last_used else ""
        table.add_row(Text(c.name), str(len(c.files)), human_size(c.size), used, Text(c.description))
    table.add_row("total", str(sum(len(c.files) for c in caches)), human_size(sum(c.size for c in caches)), "", "")
    Console().print(table)


def rm(
    names: Annotated[list[str] | None, typer.Argument(help="Caches to delete, as `c2p cache ls` names them.", show_default=False)] = None,
    all_: Annotated[bool, typer.Option("--all", help="Delete every cache.")] = False,
) -> None:
    """Delete whole caches (they are recomputed when needed); only the files c2p wrote go."""
    from rich.console import Console

    from ..errors import UsageError
    from ..store.caches import human_size, remove_caches

    if bool(names) == all_:
        raise UsageError("give cache names (see `c2p cache ls`) or --all, not both")
    removed = remove_caches(None if all_ else list(names))
    Console(stderr=True).print(
        f"removed {len(removed)} cache(s), {sum(len(c.files) for c in removed)} files, {human_size(sum(c.size for c in removed))}",
        highlight=False,
    )


def prune(
    older_than: Annotated[
        float | None,
        typer.Option("--older-than", help="Delete files not used for this many days.", callback=between(0, MAX_AGE_DAYS)),
    ] = None,
    max_size: Annotated[
        str | None, typer.Option("--max-size", help="Then delete the least recently used files until the caches fit, e.g. 2G.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be deleted.")] = False,
) -> None:
    """Delete old cache files, or the least recently used ones above a size; leftovers of interrupted writes always go."""
    from rich.console import Console

    from ..errors import UsageError
    from ..store.caches import human_size, parse_size
    from ..store.caches import prune as run_prune

    if older_than is None and max_size is None:
        raise UsageError("give --older-than DAYS and/or --max-size SIZE")
    result = run_prune(older_than, parse_size(max_size) if max_size is not None else None, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    Console(stderr=True).print(
        f"{verb} {len(result.removed)} file(s), {human_size(result.freed)}; {human_size(result.kept_bytes)} kept", highlight=False
    )


def build_app(wrap, examples_epilog, epilog: str, context_settings: dict) -> typer.Typer:
    """The `c2p cache` group; `wrap` adds the options every command shares (see app.py)."""
    group = typer.Typer(
        help="Show and clear the text and feature caches ($C2P_CACHE_DIR, else ~/.cache/clip2point).",
        no_args_is_help=True, epilog=epilog, context_settings=context_settings,
    )  # fmt: skip
    for name, func in (("ls", ls), ("rm", rm), ("prune", prune)):
        group.command(name, epilog=examples_epilog(EXAMPLES[name]), context_settings=context_settings)(wrap(func))
    return group
