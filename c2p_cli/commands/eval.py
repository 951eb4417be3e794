"""`c2p eval`: accuracy of a zero-shot or few-shot classifier on a dataset split, with a report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import option_table as table
from . import _options as opt


def eval_cmd(
    data: Annotated[Path, typer.Argument(help="Dataset folder (layout detected; see --dataset).", show_default=False)],
    output: Annotated[Path, opt.output("Report folder: report.json and confusion.png.")],
    adapter: opt.Adapter = None,
    which: opt.WhichOption = table.default("which"),
    backend: opt.BackendOption = None,
    engine: opt.Engine = None,
    split: Annotated[opt.Split, typer.Option("--split", case_sensitive=False, help="train or test.")] = table.default("split"),
    dataset: Annotated[
        opt.DatasetKind,
        typer.Option("--dataset", case_sensitive=False, metavar=opt.DATASET_METAVAR, help=opt.DATASET_HELP),
    ] = table.default("dataset"),
    labels: opt.Labels = None,
    labels_file: opt.LabelsFile = None,
    label_set: opt.LabelSet = None,
    templates: opt.Prompt = None,
    model: opt.Model = table.default("model"),
    pretrained: opt.Pretrained = table.default("pretrained"),
    depth_encoder: opt.DepthEncoderPath = None,
    views: opt.RunViews = None,
    n_points: opt.RunPoints = None,
    sampling: opt.RunSampling = None,
    up: opt.RunUp = None,
    variant: Annotated[
        opt.Variant | None, typer.Option("--variant", case_sensitive=False, help="ScanObjectNN variant (default: obj_bg).")
    ] = None,
    seed: opt.Seed = table.default("seed"),
    max_points: opt.MaxPoints = table.default("max_points"),
    bin_columns: opt.BinColumns = table.default("bin_columns"),
    batch_size: opt.BatchSize = table.default("batch_size"),
    top_k: opt.TopK = 5,
    workers: opt.Workers = None,
    device: opt.Device = table.default("device"),
    overwrite: opt.Overwrite = False,
    quiet: opt.Quiet = False,
) -> None:
    """Evaluate zero-shot CLIP2Point (default), a trained adapter (--adapter) or an export (--engine) on a dataset split.

    Writes OUTPUT/report.json (top-1, top-k, per-class accuracy, confusion matrix, predictions,
    skipped files, the run's description) and OUTPUT/confusion.png. Zero-shot prompts use the
    dataset's class names unless --labels / --labels-file renames them (same order) or --label-set
    gives a named set the classes are looked up in. Ctrl-C writes the report of the samples done so
    far, marked incomplete.
    """
    from rich.console import Console

    from ..run_spec import describe_run
    from ._common import given_on_command_line

    options = opt.run_options(locals())
    spec = describe_run(**options, given={name for name in options if given_on_command_line(name)}, needs_labels=False)
    _prepare_out(output, overwrite)
    console = Console(stderr=True)
    from ..distributed import process_group, resolve_device

    with process_group(resolve_device(spec.device)) as ctx:
        loaded = _classifier_and_data(console, spec, ctx, data, dataset, split, variant)
        report = _evaluate(console, loaded, ctx, output, quiet)
    if report is None:
        return  # a rank other than 0: rank 0 reports for every rank
    _write_report(console, report, output, quiet)


class _Loaded:
    """What an evaluation runs on: the classifier, the dataset, how their labels map, the complete description."""

    def __init__(self, clf, ds, split, spec, mapping, mode):
        self.clf, self.ds, self.split, self.spec, self.mapping, self.mode = clf, ds, split, spec, mapping, mode


def _classifier_and_data(console, spec, ctx, data, dataset, split, variant) -> _Loaded:
    """The classifier and the dataset. What brings its own labels (an adapter run, an export) also brings
    the read settings its labels were learnt with, so it loads first; a zero-shot classifier or the
    official checkpoint takes the dataset's classes, so the dataset opens first."""
    from rich.markup import escape

    from clip2point.training.datasets import open_dataset

    from ..evaluate import label_mapping
    from ..models.resolve import load_run_classifier
    from ..run_spec import complete
    from ..views import describe_up_axis
    from ._messages import cli_text

    device = ctx.device if ctx.distributed else None
    brings_labels = spec.source in ("adapter run", "export")
    clf = None
    if brings_labels:
        with console.status("loading the model", spinner="dots"):
            clf = load_run_classifier(spec, device=device)
    read = complete(spec, clf, fill_defaults=False) if clf is not None else (spec, [])
    for line in read[1]:
        console.print(f"[yellow]warning:[/] {escape(cli_text(line))}")
    given = read[0]
    ds = open_dataset(data, dataset, split, seed=spec.seed, variant=variant, max_points=spec.max_points,
                      bin_columns=spec.bin_columns, n_points=given.n_points or table.default("n_points"),
                      sampling=given.sampling, up=given.up)  # fmt: skip
    info = ds.describe()
    if ctx.is_main:
        sampled = "every point of each file" if info.get("all_points") else f"{info['n_points']} points ({info['sampling']})"
        console.print(f"{ds.kind} {split}: {len(ds)} samples, {sampled}, {describe_up_axis(ds.up)}")
    if clf is None:
        with console.status("loading the model", spinner="dots"):
            clf = load_run_classifier(spec, device=device, default_labels=ds.labels)
    spec, _ = complete(spec, clf)
    spec = _read_as_dataset(spec, info)
    positional = spec.labels_by_position and not brings_labels
    mapping = label_mapping(ds.labels, clf.labels, positional=positional)
    few_shot = spec.adapter is not None or bool((getattr(clf, "meta", None) or {}).get("adapter"))
    return _Loaded(clf, ds, split, spec, mapping, "few-shot" if few_shot else "zero-shot")


def _read_as_dataset(spec, info: dict):
    """The description with the read settings the dataset really used (its kind decides unset ones)."""
    from dataclasses import replace

    return replace(spec, n_points=info.get("n_points", spec.n_points), sampling=info.get("sampling", spec.sampling),
                   up=info.get("up", spec.up))  # fmt: skip


def _evaluate(console, loaded: _Loaded, ctx, output: Path, quiet: bool) -> dict | None:
    """The report (on rank 0; None on the others). Under torchrun each rank evaluates every
    world_size-th sample on its own device; rank 0 merges. Ctrl-C writes the samples done so far."""
    from .. import __version__
    from ..distributed import gather_objects, shard
    from ..engine.pipeline import default_workers
    from ..evaluate import DatasetShard, EvalInterrupted, evaluate_classifier, merge_reports
    from ..run_spec import record
    from ..views import describe_up_axis
    from ._progress import event_display

    clf, ds, spec = loaded.clf, loaded.ds, loaded.spec
    part = DatasetShard(ds, shard(len(ds), ctx)) if ctx.distributed else ds
    workers = default_workers(len(part)) if spec.workers is None else spec.workers
    extra = {"mode": loaded.mode, "dataset": {**ds.describe(), "rotation": describe_up_axis(ds.up)},
             "classifier": getattr(clf, "meta", {}), "run": record(spec, clf), "version": __version__}  # fmt: skip
    with event_display(console, f"evaluating {loaded.split}", total=len(part), kinds=("eval",),
                       disable=quiet or not ctx.is_main) as display:  # fmt: skip
        try:
            report = evaluate_classifier(clf, part, loaded.mapping, spec.batch_size, top_k=spec.top_k, workers=workers,
                                         on_event=display)  # fmt: skip
        except EvalInterrupted as e:
            display.stop()
            if ctx.is_main:
                _interrupted(console, {**e.report, **extra, "complete": False}, output, ctx)
            raise typer.Exit(130) from None
    if ctx.distributed:
        reports = gather_objects(ctx, report)
        if not ctx.is_main:
            return None
        report = merge_reports(reports, ds.sample_ids, clf.labels)
    report.update(extra)
    report["complete"] = True
    note = (getattr(clf, "meta", {}).get("selection") or {}).get("note")
    if note:  # an adapter whose epoch was chosen on the test split: its test accuracy is optimistic
        report["selection"] = note
        console.print(f"[yellow]selection:[/] {note}")
    return report


def _interrupted(console, report: dict, output: Path, ctx) -> None:
    from ..store.checkpoints import write_json

    if ctx.distributed:
        report["note"] = f"rank 0's share of {ctx.world_size} only"
    write_json(output / "report.json", report)
    console.print(f"[yellow]interrupted: {report['n']} samples evaluated, {len(report['skipped'])} skipped; "
                  f"a partial report (\"complete\": false) is in {output / 'report.json'}[/]")  # fmt: skip


def _write_report(console, report: dict, output: Path, quiet: bool) -> None:
    from ..store.checkpoints import write_json
    from ._plots import confusion_png

    write_json(output / "report.json", report)
    confusion_png(output / "confusion.png", report)
    if not quiet:
        _print_report(report)
    console.print(f"wrote {output / 'report.json'} and {output / 'confusion.png'}")
    if report["skipped"]:
        console.print(f"[yellow]{len(report['skipped'])} file(s) could not be read and were skipped (listed in report.json)[/]")


def _prepare_out(out: Path, overwrite: bool) -> None:
    """Create the report folder up front: a bad --output fails before any model or data is loaded, and an
    earlier report is replaced only with --overwrite."""
    from ..errors import Opt, OptionError
    from ._common import output_folder

    if (out / "report.json").exists() and not overwrite:
        raise OptionError(Opt("output"), f" {out} already holds a report; add ", Opt("overwrite"), " to replace it")
    output_folder(out, "--output", "report folder")


def _print_report(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    top_k = f"  top-{report['top_k']} {report['top_k_accuracy']:.3f}" if "top_k" in report else ""
    shown = Table(title=f"{report['mode']} top-1 {report['top1']:.3f}{top_k}  (mean class {report['mean_class_accuracy']:.3f}, n={report['n']})")
    shown.add_column("class")
    shown.add_column("samples", justify="right")
    shown.add_column("accuracy", justify="right")
    for name, row in report["per_class"].items():
        if row["count"]:
            shown.add_row(name, str(row["count"]), f"{row['accuracy']:.3f}")
    Console().print(shown)
