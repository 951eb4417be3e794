"""Shared by `c2p make-pairs` and `c2p synth --pairs`: write a pairs set with a progress bar, then report."""

from __future__ import annotations

from pathlib import Path


def write_pairs_with_progress(sources, out: Path, *, n_points: int, up: str, colour: str, seed: int) -> dict:
    """Render `sources` into the pairs set `out` (clip2point.training.pairs.write_pairs), showing progress on stderr."""
    from rich.console import Console
    from rich.table import Table

    from clip2point.training.mesh_render import require_open3d
    from clip2point.training.pairs import write_pairs

    from ._progress import progress_bar

    require_open3d()  # without the mesh extra: one line naming it, before any progress or output
    console = Console(stderr=True)
    sources = list(sources)
    with progress_bar(console, "[bold]rendering pairs", transient=True) as bar:
        task = bar.add_task("pairs", total=len(sources))
        meta = write_pairs(
            sources, out, n_points=n_points, up=up, colour=colour, seed=seed,
            on_model=lambda _src, _problem: bar.advance(task),
        )
    if not meta["models"]:
        from ..errors import DatasetError

        first = meta["skipped"][0] if meta["skipped"] else {"source": str(out), "problem": "no meshes"}
        raise DatasetError(
            f"none of {len(sources)} mesh(es) could be rendered (first: {first['source']}: {first['problem']})"
        )
    if meta["skipped"]:
        table = Table(title=f"skipped {len(meta['skipped'])} mesh(es)", show_lines=False)
        table.add_column("file")
        table.add_column("problem")
        for entry in meta["skipped"]:
            table.add_row(entry["source"], entry["problem"])
        console.print(table)
    console.print(
        f"wrote {len(meta['models'])} pairs ({len(meta['views'])} views, {n_points} points each, up={up}) "
        f"to {out}; train with: c2p pretrain {out} RUN",
        highlight=False,
    )
    return meta
