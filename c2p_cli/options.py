"""Option types shared by several commands, so that each default and help text exists once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import defaults

Model = Annotated[str, typer.Option("--model", "-m", help="open_clip architecture (e.g. ViT-B-32, or c2p-tiny for tests).")]
Pretrained = Annotated[
    str,
    typer.Option(
        "--pretrained",
        help="open_clip weights tag (e.g. openai), a local .bin/.pt/.safetensors file, or 'none' for random weights.",
    ),
]
DepthEncoderPath = Annotated[
    Path | None,
    typer.Option(
        "--depth-encoder",
        help="Weights of the depth encoder (c2p pretrain output, or the official CLIP2Point checkpoint).",
        dir_okay=True,
    ),
]
Views = Annotated[int, typer.Option("--views", help="Number of fixed views: 6 (zero-shot default) or 10.")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
Labels = Annotated[str | None, typer.Option("--labels", "-l", help="Comma-separated class names, e.g. chair,table.")]
LabelSet = Annotated[
    str | None, typer.Option("--label-set", help="Built-in labels: modelnet40, modelnet10, scanobjectnn, shapenet55.")
]
Prompt = Annotated[
    list[str] | None,
    typer.Option("--prompt", help=f"Prompt template with {{}} for the label; repeatable (features averaged). Default: '{defaults.PROMPT_TEMPLATE}'."),
]
Points = Annotated[int, typer.Option("--points", help="Points sampled per shape.")]
Sampling = Annotated[str, typer.Option("--sampling", help="random (seeded) or fps (farthest point sampling).")]
UpAxis = Annotated[
    str,
    typer.Option("--up", help="The shapes' up axis: z (ModelNet, scanners, CAD: rotated like the paper's ModelNet) or y (ShapeNet-style)."),
]
Seed = Annotated[int, typer.Option("--seed", help="Random seed (sampling, splits, training).")]
BatchSize = Annotated[int, typer.Option("--batch-size", "-b", help="Shapes per batch.")]
MaxPoints = Annotated[
    int,
    typer.Option("--max-points", help="The most points (or vertices, triangles) a file may declare; larger files fail.", show_default=True),
]
BinColumns = Annotated[
    int, typer.Option("--bin-columns", help="float32 columns per point of .bin scans (KITTI 4, nuScenes 5).")
]
