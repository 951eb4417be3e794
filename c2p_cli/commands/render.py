"""`c2p render`: the depth maps CLIP sees, as a captioned PNG montage or as the arrays themselves."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from .. import defaults
from .. import option_table as table
from . import _options as opt


class MapFormat(opt.Choice):
    png = "png"
    npy = "npy"


def render(
    paths: Annotated[
        list[str],
        typer.Argument(help="Point-cloud / mesh files, folders or glob patterns ('scans/**/*.ply').", show_default=False),
    ],
    output: Annotated[Path | None, opt.output("The file to write (.png or .npy), for one input.")] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out-dir", help="Folder for one file per input, named after it (chair.ply -> chair.png)."),
    ] = None,
    fmt: Annotated[
        MapFormat | None,
        typer.Option(
            "--format", case_sensitive=False,
            help="png: a captioned montage (two rows). npy: the maps as float32 (views, size, size), the normalised "
            "depth maps exactly as the encoder sees them before CLIP's mean / std normalisation (covered pixels 0 "
            "to 200/255, nearest darkest; background 1). Default: --output's extension, else png.",
        ),
    ] = None,
    recursive: opt.Recursive = False,
    ext: opt.Extensions = None,
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
    columns: Annotated[
        int | None, typer.Option("--columns", help="Tiles per row of the montage (default: two rows).", callback=opt.between(1, 64))
    ] = None,
) -> None:
    """Render the paper's depth maps (orthographic, nearest point per pixel) of each input file.

    One output per input: --output FILE for a single input, --out-dir DIR for any number. A file that
    cannot be read is reported in one line and the others are still rendered.

    Exit code 0 when every file was rendered, 1 when some failed, 2 for usage errors.
    """
    from rich.console import Console
    from rich.markup import escape

    from ..engine.batching import ReadOptions
    from ..engine.inputs import gather_inputs
    from ..errors import UsageError
    from ..views import view_preset

    console = Console(stderr=True, highlight=False)
    fmt = _output_format(output, out_dir, fmt)
    read = ReadOptions(n_points=n_points, sampling=sampling, seed=seed, up=up, max_points=max_points, bin_columns=bin_columns)
    read.validate()
    preset = view_preset(views)
    entries = gather_inputs(paths, recursive=recursive, extensions=ext)
    if not entries:
        raise UsageError(f"no supported point-cloud or mesh files in {', '.join(paths[:3])}")
    if output is not None and len(entries) > 1:
        raise UsageError(f"--output names one file, but the inputs hold {len(entries)}: use --out-dir DIR")
    targets = [output] if output is not None else _targets(out_dir, entries, fmt)
    failed = 0
    for entry, target in zip(entries, targets, strict=True):
        error = entry.error if not isinstance(entry, Path) else _render_one(entry, target, fmt, read, preset, size, columns)
        failed += bool(error)
        line = f"[yellow]failed[/] {escape(error)}" if error else f"{escape(str(entry))} -> {escape(str(target))}"
        console.print(line, soft_wrap=True)
    if len(entries) > 1 or failed:
        where = output if output is not None else out_dir
        done = len(entries) - failed
        console.print(f"rendered {done} of {len(entries)} files ({len(preset)} views, {fmt}) to {escape(str(where))}", soft_wrap=True)
    if failed:
        raise typer.Exit(1)


def _output_format(output: Path | None, out_dir: Path | None, fmt: str | None) -> str:
    """png or npy, from --format or --output's extension; refuses a missing or ambiguous destination."""
    from ..errors import UsageError

    if output is None and out_dir is None:
        raise UsageError("say where to write: --output views.png (one input) or --out-dir DIR (one file per input)")
    if output is not None and out_dir is not None:
        raise UsageError("give --output (one input) or --out-dir (one file per input), not both")
    if output is None:
        return fmt or "png"
    suffix = output.suffix.lower().lstrip(".")
    if suffix not in ("png", "npy"):
        raise UsageError(f"--output {output}: write a .png montage or .npy maps")
    if fmt is not None and fmt != suffix:
        raise UsageError(f"--output {output} is .{suffix} but --format is {fmt}")
    return suffix


def _targets(out_dir: Path, entries: Sequence, fmt: str) -> list[Path | None]:
    """One output path in `out_dir` per input (None for inputs that are already errors)."""
    from ._common import output_folder

    output_folder(out_dir, "--out-dir")
    files = [e for e in entries if isinstance(e, Path)]
    names = iter(output_names(files, "." + fmt))
    return [out_dir / next(names) if isinstance(e, Path) else None for e in entries]


def output_names(files: Sequence[Path], suffix: str) -> list[str]:
    """File names for the outputs of `files`, one each, distinct (also on case-insensitive file
    systems): the input's stem + `suffix` (chair.ply -> chair.png); inputs that share a stem keep
    their extension (chair.ply.png, chair.off.png), then their path below the folder they share
    (a__chair.ply.png, b__chair.ply.png); a file given twice gets a count (chair-2.png)."""
    def stems(group: list[int], level: int) -> list[str]:
        if level == 0:
            return [files[i].stem for i in group]
        if level == 1:
            return [files[i].name for i in group]
        absolute = [os.path.abspath(files[i]) for i in group]
        common = os.path.commonpath([os.path.dirname(a) for a in absolute])
        return [os.path.relpath(a, common).replace(os.sep, "__") for a in absolute]

    names = [""] * len(files)

    def assign(group: list[int], level: int) -> None:
        clashes: dict[str, list[tuple[int, str]]] = {}
        for i, stem in zip(group, stems(group, level), strict=True):
            clashes.setdefault(stem.lower(), []).append((i, stem))
        for same in clashes.values():
            if len(same) > 1 and len({os.path.abspath(files[i]) for i, _ in same}) == 1:
                same = [(i, files[i].stem) for i, _ in same]  # one file given again: counted below
            elif len(same) > 1 and level < 2:
                assign([i for i, _ in same], level + 1)
                continue
            for i, stem in same:
                names[i] = stem

    assign(list(range(len(files))), 0)
    taken: set[str] = set()
    for i, stem in enumerate(names):  # what the levels leave equal (one file twice, chair.ply.npy beside chair.ply)
        name, n = stem + suffix, 1
        while name.lower() in taken:
            n += 1
            name = f"{stem}-{n}{suffix}"
        taken.add(name.lower())
        names[i] = name
    return names


def _render_one(path: Path, target: Path, fmt: str, read, views, size: int, columns: int | None) -> str | None:
    """Render one file to `target`; the one-line error instead when it cannot be read or written."""
    import numpy as np

    from ..engine.batching import read_one
    from ..errors import C2PError
    from ._montage import depth_maps, depth_montage

    cloud, error = read_one(path, read)
    if error:
        return error
    try:
        maps = depth_maps(cloud, views, image_size=size)
        target.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "npy":
            np.save(target, maps.astype(np.float32))
        else:
            title = f"{path.name}: {len(cloud)} points, {len(views)} views, {size} px"
            depth_montage(maps, views, columns=columns, title=title).save(target, optimize=True)
    except C2PError as e:
        return f"{path}: {e}"
    except OSError as e:
        return f"{target}: cannot write ({e.strerror or e})"
    return None
