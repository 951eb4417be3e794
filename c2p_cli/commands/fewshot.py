"""`c2p fewshot`: train the (Gated) Dual-Path Adapter on k labelled shapes per class."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .. import defaults
from .. import option_table as table
from . import _options as opt

if TYPE_CHECKING:
    from ..events import Event


def fewshot(
    data: Annotated[Path, typer.Argument(help="Dataset folder (layout detected; see --dataset).", show_default=False)],
    output: Annotated[Path, opt.output("Run folder to create (or continue with --resume).")],
    shots: Annotated[
        int, typer.Option("--shots", "-k", help="Labelled samples per class, drawn from the train split.", callback=opt.at_least(1))
    ] = 16,
    dataset: Annotated[
        opt.DatasetKind,
        typer.Option("--dataset", case_sensitive=False, metavar=opt.DATASET_METAVAR, help=opt.DATASET_HELP),
    ] = "auto",
    model: opt.Model = table.default("model"),
    pretrained: opt.Pretrained = table.default("pretrained"),
    depth_encoder: opt.DepthEncoderPath = None,
    fusion: Annotated[
        opt.Fusion, typer.Option("--fusion", case_sensitive=False, help="gated (GDPA, learned per-channel gate) or mean (DPA).")
    ] = "gated",
    epochs: Annotated[int, typer.Option("--epochs", help="Training epochs.", callback=opt.between(1, 100_000))] = 100,
    batch_size: opt.BatchSize = table.default("batch_size"),
    lr: Annotated[float, typer.Option("--lr", help="AdamW learning rate.", callback=opt.between(0, 10, open_low=True))] = 1e-3,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay.", callback=opt.between(0, 10))] = 1e-4,
    select: Annotated[
        opt.Select, typer.Option("--select", case_sensitive=False, help="Which epoch to keep: last (all shots train; the official code's training), "
                                 "val (best accuracy on held-out shots), or test (the paper's protocol: epoch chosen on the "
                                 "test split, optimistic).")
    ] = "last",
    val_fraction: Annotated[
        float,
        typer.Option("--val-fraction", help="Part of each class's shots held out for --select val (0 to 0.9).", callback=opt.between(0, 0.9)),
    ] = 0.25,
    resamples: Annotated[
        int, typer.Option("--resamples", help="Point sets sampled per training shot (features cached); each epoch draws one, "
                          "like the official loader's fresh samples. 1: one fixed set.", callback=opt.between(1, 1000))
    ] = 1,
    seed: opt.Seed = table.default("seed"),
    views: opt.Views = defaults.FEW_SHOT_VIEWS,
    n_points: opt.Points = table.default("n_points"),
    sampling: opt.RunSampling = None,
    up: opt.RunUp = None,
    variant: Annotated[
        opt.Variant | None, typer.Option("--variant", case_sensitive=False, help="ScanObjectNN variant (default: obj_bg).")
    ] = None,
    templates: opt.Prompt = None,
    device: opt.Device = table.default("device"),
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", help="Where per-view features are cached (default: the c2p cache folder).")
    ] = None,
    feature_batch_size: Annotated[
        int, typer.Option("--feature-batch-size", help="Shapes rendered and encoded per batch when computing features "
                          "(under torchrun, each rank takes whole batches).", callback=opt.check_batch)
    ] = 32,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Keep features in memory only (compute them once per run).")] = False,
    save_every: Annotated[
        int, typer.Option("--save-every", help="Epochs between resume checkpoints (last.safetensors + state).", callback=opt.at_least(1))
    ] = 1,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last completed epoch.")] = False,
    test: Annotated[bool, typer.Option("--test/--no-test", help="Report test-split accuracy at the end (never used for selection).")] = True,
    quiet: opt.Quiet = False,
) -> None:
    """Train a few-shot adapter (CLIP2Point's dual-path adapter) and save it to a run folder.

    The encoders are frozen: both paths' per-view features are computed once (and cached), then
    each epoch only trains the adapter. Use the run with `c2p classify --adapter RUN` and
    `c2p eval DATA --adapter RUN`.

    Runs the same under `torchrun --nproc_per_node N -m clip2point fewshot ...` (NCCL on GPUs, gloo
    on CPU): each rank computes the features of its share of the shots and of the test split on
    its own device, rank 0 trains the adapter and writes the run, the same one a single process writes.
    """
    from rich.console import Console

    from clip2point.training.fewshot import FewShotOptions

    from ..distributed import process_group, resolve_device

    console = Console(stderr=True)
    opts = FewShotOptions(
        shots=shots, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed, fusion=fusion,
        select=select, val_fraction=val_fraction, model=model, pretrained=pretrained,
        depth_encoder=str(depth_encoder) if depth_encoder else None, views=views, n_points=n_points, sampling=sampling,
        up=up, dataset_kind=dataset, templates=list(templates) if templates else None, device=device,
        cache_dir=str(cache_dir) if cache_dir else None, use_cache=not no_cache, eval_test=test, variant=variant,
        save_every=save_every, resamples=resamples, feature_batch_size=feature_batch_size,
    )
    with process_group(resolve_device(device)) as ctx:
        summary = _train(console, data, output, opts, resume, quiet, ctx)
    if summary is None:
        return  # a rank other than 0: rank 0 reports for every rank
    if not quiet:
        _print_summary(summary)
    from ._plots import write_curves

    console.print(f"training curves: {write_curves(output, summary) or 'none (no epoch logged)'}", highlight=False, soft_wrap=True)
    note = (summary.get("selection") or {}).get("note")
    if note:
        console.print(f"[yellow]selection:[/] {note}")
    for w in summary.get("warnings", []):
        console.print(f"[yellow]note:[/] {w}")
    if summary.get("skipped"):
        console.print(f"[yellow]{len(summary['skipped'])} shot file(s) could not be read and were skipped (see {output}/summary.json)[/]")


def _train(console, data: Path, out: Path, opts, resume: bool, quiet: bool, ctx) -> dict | None:
    """run_fewshot with a progress display on rank 0: the summary, or None on the other ranks."""
    from clip2point.training.fewshot import run_fewshot

    from ._progress import progress_bar

    with progress_bar(console, info=True, disable=quiet or not ctx.is_main) as progress:
        tasks: dict[str, int] = {}

        def on_event(event: Event) -> None:
            if event.kind == "stage" and not quiet:
                progress.console.print(f"[dim]{event.get('name')}[/]")
            elif event.kind == "features":
                key = f"features ({event.get('name')})"
                if key not in tasks:
                    tasks[key] = progress.add_task(key, total=event.total, info="")
                progress.update(tasks[key], completed=event.done)
            elif event.kind == "epoch":
                m = event.data
                if "train" not in tasks:
                    tasks["train"] = progress.add_task("training", total=event.total, info="")
                text = f"loss {m['loss']:.3f}  acc {m['train_acc']:.3f}"
                if "val_acc" in m:
                    text += f"  val {m['val_acc']:.3f}"
                if "test_acc" in m:
                    text += f"  test {m['test_acc']:.3f}"
                progress.update(tasks["train"], completed=event.done, info=text)

        return run_fewshot(data, out, opts, resume=resume, on_event=on_event, ctx=ctx)


def _print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"few-shot run {summary['run']}")
    table.add_column("")
    table.add_column("value", justify="right")
    last = summary.get("last") or {}
    rows = [
        ("classes", str(len(summary["labels"]))),
        ("training / validation shots", f"{summary['train_samples']} / {summary['val_samples']}"),
        ("epochs", str(summary["epochs"])),
        ("best epoch", str(summary["best_epoch"])),
        ("last train accuracy", f"{last.get('train_acc', float('nan')):.3f}"),
    ]
    if summary.get("best_val_acc") is not None:
        rows.append(("best validation accuracy", f"{summary['best_val_acc']:.3f}"))
    note = (summary.get("selection") or {}).get("note")
    if note:
        rows.append(("epoch selection", note))
    test = summary.get("test")
    if test and "best" in test:
        rows.append(("test accuracy (best / last)", f"{test['best']['top1']:.3f} / {test['last']['top1']:.3f}"))
    elif test and "error" in test:
        rows.append(("test accuracy", test["error"]))
    rows.append(("time", f"{summary['time_s']:.1f} s"))
    for k, v in rows:
        table.add_row(k, v)
    Console().print(table)
