"""`c2p eval`: accuracy of a zero-shot or few-shot classifier on a dataset split, with a report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import defaults
from . import _options as opt


def eval_cmd(
    data: Annotated[Path, typer.Argument(help="Dataset folder (layout detected; see --dataset).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder: report.json and confusion.png.")],
    adapter: Annotated[
        Path | None,
        typer.Option("--adapter", help="A `c2p fewshot` run folder (or an official CLIP2Point few-shot checkpoint); default: zero-shot."),
    ] = None,
    which: Annotated[opt.Which, typer.Option("--which", case_sensitive=False, help="Adapter weights of the run: best or last.")] = "best",
    split: Annotated[opt.Split, typer.Option("--split", case_sensitive=False, help="train or test.")] = "test",
    dataset: Annotated[
        opt.DatasetKind,
        typer.Option("--dataset", case_sensitive=False, metavar=opt.DATASET_METAVAR, help=opt.DATASET_HELP),
    ] = "auto",
    labels: opt.Labels = None,
    label_set: opt.LabelSet = None,
    prompt: opt.Prompt = None,
    model: opt.Model = defaults.MODEL,
    pretrained: opt.Pretrained = defaults.PRETRAINED,
    depth_encoder: opt.DepthEncoderPath = None,
    views: opt.Views = defaults.ZERO_SHOT_VIEWS,
    points: Annotated[
        int | None,
        typer.Option(
            "--points", help=f"Points sampled per shape (default: the --adapter run's, else {defaults.NUM_POINTS}).", callback=opt.check_points
        ),
    ] = None,
    sampling: Annotated[
        opt.SamplingChoice | None,
        typer.Option("--sampling", case_sensitive=False, help="random or fps (default: the --adapter run's, else fps for ScanObjectNN, else random)."),
    ] = None,
    up: Annotated[
        opt.UpAxisChoice | None,
        typer.Option("--up", case_sensitive=False, help="Up axis z or y (default: the --adapter run's, else z for ModelNet meshes / ModelNet40_Ply / synth / folders, y for ModelNet h5 / resampled and ScanObjectNN)."),
    ] = None,
    variant: Annotated[
        opt.Variant | None, typer.Option("--variant", case_sensitive=False, help="ScanObjectNN variant (default: obj_bg).")
    ] = None,
    seed: opt.Seed = 0,
    max_points: opt.MaxPoints = defaults.MAX_POINTS,
    bin_columns: opt.BinColumns = defaults.BIN_COLUMNS,
    batch_size: opt.BatchSize = 32,
    device: opt.Device = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no table.")] = False,
) -> None:
    """Evaluate zero-shot CLIP2Point (default) or a trained adapter (--adapter) on a dataset split.

    Writes OUT/report.json (top-1, per-class accuracy, confusion matrix, predictions, skipped files)
    and OUT/confusion.png. Zero-shot prompts use the dataset's class names unless --labels renames
    them (same order) or --label-set gives a named set the classes are looked up in.
    """
    from rich.console import Console

    from clip2point.training.datasets import open_dataset

    from .. import __version__
    from ..evaluate import classifier_for_dataset, evaluate_classifier
    from ..store.checkpoints import write_json
    from ..views import describe_up_axis
    from ._progress import progress_bar

    console = Console(stderr=True)
    if adapter is not None and adapter.is_dir():
        from ..errors import UsageError
        from ._common import given_on_command_line

        clash = [n for n in ("model", "pretrained", "views", "prompt") if given_on_command_line(n)]
        if clash:  # a run folder brings its own: refuse rather than silently ignore
            flags = ", ".join("--" + n for n in clash)
            raise UsageError(f"--adapter {adapter} brings its own model, views and prompts: drop {flags}")
    _prepare_out(out)
    read = {"n_points": points, "sampling": sampling, "up": up}
    if adapter is not None and adapter.is_dir():
        from rich.markup import escape

        from ..models.adapters import merge_read_settings, read_run_config, run_read_settings
        from ._messages import cli_text

        read, warnings = merge_read_settings(read, run_read_settings(read_run_config(adapter)))
        for line in warnings:
            console.print(f"[yellow]warning:[/] {escape(cli_text(line))}")
    elif read["n_points"] is None:
        read["n_points"] = defaults.NUM_POINTS
    ds = open_dataset(
        data, dataset, split, seed=seed, variant=variant, max_points=max_points, bin_columns=bin_columns, **read
    )
    info = ds.describe()
    sampled = "every point of each file" if info.get("all_points") else f"{info['n_points']} points ({info['sampling']})"
    # Under torchrun each rank evaluates every world_size-th sample on its own device; rank 0 merges.
    from ..distributed import gather_objects, process_group, resolve_device, shard
    from ..evaluate import DatasetShard, merge_reports

    with process_group(resolve_device(device)) as ctx:
        if ctx.is_main:
            console.print(f"{ds.kind} {split}: {len(ds)} samples, {sampled}, {describe_up_axis(ds.up)}")
        with console.status("loading the model", spinner="dots"):
            clf, mapping, mode = classifier_for_dataset(
                ds.labels, adapter=adapter, which=which, labels=labels, label_set=label_set, templates=prompt,
                model=model, pretrained=pretrained, depth_encoder=depth_encoder, views=views,
                device=str(ctx.device) if ctx.distributed else device,
            )
        part = DatasetShard(ds, shard(len(ds), ctx)) if ctx.distributed else ds
        with progress_bar(console, f"evaluating {split}", eta=False, disable=quiet or not ctx.is_main) as progress:
            task = progress.add_task("eval", total=len(part))
            report = evaluate_classifier(clf, part, mapping, batch_size,
                                         progress=lambda done, total: progress.update(task, completed=done))
        if ctx.distributed:
            reports = gather_objects(ctx, report)
            if not ctx.is_main:
                return
            report = merge_reports(reports, ds.sample_ids, clf.labels)
    report.update({"mode": mode, "dataset": {**ds.describe(), "rotation": describe_up_axis(ds.up)},
                   "classifier": getattr(clf, "meta", {}), "version": __version__})
    note = (getattr(clf, "meta", {}).get("selection") or {}).get("note")
    if note:  # an adapter whose epoch was chosen on the test split: its test accuracy is optimistic
        report["selection"] = note
        console.print(f"[yellow]selection:[/] {note}")
    write_json(out / "report.json", report)
    from ._plots import confusion_png
    confusion_png(out / "confusion.png", report)
    if not quiet:
        _print_report(report)
    console.print(f"wrote {out / 'report.json'} and {out / 'confusion.png'}")
    if report["skipped"]:
        console.print(f"[yellow]{len(report['skipped'])} file(s) could not be read and were skipped (listed in report.json)[/]")


def _prepare_out(out: Path) -> None:
    """Create the report folder up front: a bad --out fails before any model or data is loaded."""
    from ._common import output_folder

    output_folder(out, "--out", "report folder")


def _print_report(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{report['mode']} top-1 {report['top1']:.3f}  (mean class {report['mean_class_accuracy']:.3f}, n={report['n']})")
    table.add_column("class")
    table.add_column("samples", justify="right")
    table.add_column("accuracy", justify="right")
    for name, row in report["per_class"].items():
        if row["count"]:
            table.add_row(name, str(row["count"]), f"{row['accuracy']:.3f}")
    Console().print(table)
