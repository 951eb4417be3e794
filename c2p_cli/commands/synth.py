"""`c2p synth`: write a dataset of procedural shapes (train/test, one folder per class)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import option_table as table
from . import _options as opt


def synth(
    out: Annotated[Path | None, typer.Argument(help="Output folder (created).", show_default=False)] = None,
    classes: Annotated[
        str | None,
        typer.Option("--classes", help="Comma-separated shape classes (default: all; see --list)."),
    ] = None,
    per_class: Annotated[int, typer.Option("--per-class", help="Training samples per class.", callback=opt.between(0, 100_000))] = 20,
    test_per_class: Annotated[
        int | None,
        typer.Option("--test-per-class", help="Test samples per class (default: per-class / 4, at least 1).", callback=opt.between(0, 100_000)),
    ] = None,
    fmt: Annotated[
        opt.SynthFormat,
        typer.Option(
            "--format",
            case_sensitive=False,
            help="ply (noisy cloud, binary PLY), npy (noisy cloud) or off (the mesh, ModelNet-like).",
        ),
    ] = "ply",
    n_points: opt.Points = 2048,
    seed: opt.Seed = table.default("seed"),
    list_classes: Annotated[bool, typer.Option("--list", help="Print the shape classes and exit.")] = False,
    pairs: Annotated[
        bool,
        typer.Option("--pairs", help="Write image-depth pairs of the training meshes for `c2p pretrain` instead (see `c2p make-pairs`)."),
    ] = False,
) -> None:
    """Write procedural shapes as OUT/train/<class>/*.<fmt> and OUT/test/<class>/*.<fmt>, plus classes.txt and synth.json."""
    from rich.console import Console

    from .. import synth as lib
    from ..errors import UsageError
    from ._progress import progress_bar

    console = Console(stderr=True)
    if list_classes:
        typer.echo("\n".join(lib.SHAPES))
        return
    if out is None:
        raise UsageError("c2p synth needs an output folder: c2p synth OUT [options]")
    names = lib.check_classes([c.strip() for c in classes.split(",") if c.strip()] if classes else None)
    if pairs:
        from clip2point.training.pairs import synth_sources

        from ._pairs_output import write_pairs_with_progress

        write_pairs_with_progress(synth_sources(names, per_class, seed), out, n_points=n_points, up="z", colour="grey", seed=seed)
        return
    if test_per_class is None:
        test_per_class = max(1, per_class // 4) if per_class else 0
    total = (per_class + test_per_class) * len(names)
    with progress_bar(console, "[bold]synth", eta=False, transient=True) as bar:
        task = bar.add_task("synth", total=total)
        manifest = lib.write_dataset(
            out, names, per_class, test_per_class, fmt, n_points, seed, progress=lambda _path: bar.advance(task)
        )
    console.print(
        f"wrote {manifest['total']} {fmt} files ({len(names)} classes x {per_class} train + {test_per_class} test, "
        f"seed {seed}) to {out}",
        highlight=False,
    )
