"""`c2p make-pairs`: image-depth pairs (RGB renders from the 10 views + surface samples) of a folder of meshes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import option_table as table
from . import _options as opt


def make_pairs(
    mesh_dir: Annotated[Path, typer.Argument(help="Folder of meshes (.off/.obj/.stl/.glb/.gltf/.ply with faces), searched recursively.", show_default=False)],
    out: Annotated[Path, typer.Argument(help="Output folder of the pairs set (created).", show_default=False)],
    n_points: opt.Points = 8192,
    up: opt.UpAxis = table.default("up"),
    colour: Annotated[
        opt.Colour, typer.Option("--colour", case_sensitive=False, help="Base colour: grey, or random (seeded per model).")
    ] = "grey",
    seed: opt.Seed = table.default("seed"),
) -> None:
    """Render each mesh of MESH_DIR from the 10 pre-training views (shaded, white background) and store the
    renders with sampled surface points, as OUT/pairs.json and OUT/<model>/{points.npy,view_<k>.png}.

    Labels come from the first folder below MESH_DIR (ModelNet-style class folders). Meshes that
    cannot be read are skipped and listed. Train on the result with `c2p pretrain OUT RUN`.
    """
    from clip2point.training.pairs import mesh_sources

    from ._pairs_output import write_pairs_with_progress

    write_pairs_with_progress(mesh_sources(mesh_dir), out, n_points=n_points, up=up, colour=colour, seed=seed)
