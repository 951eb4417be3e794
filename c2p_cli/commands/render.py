"""`c2p render`: the depth maps CLIP sees for one file, as a montage PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import defaults
from .. import option_table as table
from . import _options as opt


def render(
    path: Annotated[Path, typer.Argument(help="A point-cloud or mesh file.", show_default=False)],
    output: Annotated[Path, opt.output("Montage PNG to write.")] = Path("views.png"),
    views: opt.Views = table.default("views"),
    n_points: opt.Points = table.default("n_points"),
    sampling: opt.Sampling = table.default("sampling"),
    up: opt.UpAxis = table.default("up"),
    seed: opt.Seed = table.default("seed"),
    max_points: opt.MaxPoints = table.default("max_points"),
    bin_columns: opt.BinColumns = table.default("bin_columns"),
    size: Annotated[
        int, typer.Option("--size", help="Image size in pixels, 16 to 2048 (the models expect 224).", callback=opt.between(16, 2048))
    ] = defaults.IMAGE_SIZE,
    columns: Annotated[int, typer.Option("--columns", help="Tiles per row of the montage.", callback=opt.between(1, 64))] = 5,
) -> None:
    """Render the paper's depth maps of FILE (orthographic, nearest point per pixel) into a montage."""
    from rich.console import Console

    from ..errors import UsageError
    from ..io import read_cloud
    from ..views import view_preset
    from ._montage import depth_montage

    if output.suffix.lower() != ".png":
        raise UsageError(f"--output {output}: the montage is written as PNG; use a .png name")
    preset = view_preset(views)
    cloud = read_cloud(
        path, n_points=n_points, sampling=sampling, seed=seed, up=up, max_points=max_points, bin_columns=bin_columns
    )
    image = depth_montage(cloud, preset, image_size=size, columns=columns)
    output.parent.mkdir(parents=True, exist_ok=True)
    image.save(output)
    Console(stderr=True).print(f"wrote {len(preset)} depth maps of {path} ({len(cloud)} points) to {output}")
