"""`c2p pretrain`: image-depth pre-training of a depth encoder (CLIP2Point sec. 3), DDP-aware."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .. import defaults
from .. import option_table as table
from . import _options as opt

if TYPE_CHECKING:
    from ..events import Event

SHOW_SKIPPED = 5  # skipped models listed on the console; config.json lists them all


def pretrain(
    data: Annotated[Path, typer.Argument(help="Pairs set: a `c2p make-pairs` / `c2p synth --pairs` folder, or CLIP2Point's ShapeNet-55 renders.", show_default=False)],
    run: Annotated[Path, typer.Argument(help="Run folder: checkpoints, metrics.jsonl, depth_encoder.safetensors.", show_default=False)],
    layout: Annotated[
        opt.Layout, typer.Option("--layout", case_sensitive=False, help="auto, c2p (pairs.json) or clip2point (ShapeNet55/ + rendering/).")
    ] = "auto",
    split: Annotated[opt.Split, typer.Option("--split", case_sensitive=False, help="Split list of the clip2point layout.")] = "train",
    model: opt.Model = table.default("model"),
    pretrained: opt.Pretrained = table.default("pretrained"),
    init: Annotated[Path | None, typer.Option("--init", help="Start the depth encoder from these weights instead of CLIP's visual tower.")] = None,
    epochs: Annotated[int, typer.Option("--epochs", help="Epochs (the paper: 100).", callback=opt.between(1, 100_000))] = 100,
    batch_size: opt.BatchSize = 256,
    accumulate: Annotated[int, typer.Option("--accumulate", help="Micro-batches per optimiser step (gradient accumulation).", callback=opt.between(1, 4096))] = 1,
    optimizer: Annotated[opt.Optimizer, typer.Option("--optimizer", case_sensitive=False, help="lamb (the paper's: every trained parameter decays) or adamw.")] = "lamb",
    lr: Annotated[float | None, typer.Option("--lr", help="Peak learning rate (default: 5e-5 for adamw, 6e-3 for lamb).", callback=opt.between(0, 10, open_low=True))] = None,
    weight_decay: Annotated[float | None, typer.Option("--weight-decay", help="Weight decay (default: 0.05 for adamw, 1e-4 for lamb).", callback=opt.between(0, 10))] = None,
    min_lr: Annotated[float | None, typer.Option("--min-lr", help="Floor of the cosine schedule (default: lr / 600).", callback=opt.between(0, 10))] = None,
    restart_epochs: Annotated[int, typer.Option("--restart-epochs", help="Warm restart of the cosine schedule every this many epochs.", callback=opt.at_least(1))] = 2,
    n_points: opt.Points = table.default("n_points"),
    seed: opt.Seed = table.default("seed"),
    device: opt.Device = table.default("device"),
    workers: Annotated[int, opt.option("workers", show_default=True)] = 4,
    cache_image_features: Annotated[bool, typer.Option("--cache-image-features/--no-cache-image-features", help="Encode every render once with the frozen image encoder before training.")] = True,
    feature_cache_dir: Annotated[Path | None, typer.Option("--feature-cache-dir", help="Where cached image features go (default: the c2p cache).")] = None,
    bf16: Annotated[bool, typer.Option("--bf16/--no-bf16", help="bfloat16 autocast on CUDA.")] = True,
    render_backend: Annotated[opt.RenderBackend, typer.Option("--render-backend", case_sensitive=False, help="auto (Triton on CUDA when it imports), triton or torch.")] = "auto",
    val: Annotated[Path | None, typer.Option("--val", help="Labelled dataset (test split) for zero-shot accuracy after each epoch.")] = None,
    val_views: Annotated[int, typer.Option("--val-views", help="Views of the zero-shot validation (6 or 10; the official code: 10).", callback=opt.check_views)] = defaults.PRETRAIN_VIEWS,
    val_limit: Annotated[int | None, typer.Option("--val-limit", help="Validate on at most this many samples.", callback=opt.at_least(1))] = None,
    val_up: Annotated[opt.UpAxisChoice | None, typer.Option("--val-up", case_sensitive=False, help="Up axis of the validation data (default: the dataset kind's).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from RUN's last checkpoint (starts fresh when there is none).")] = False,
    keep_checkpoints: Annotated[int, typer.Option("--keep-checkpoints", help="Checkpoints kept in RUN/checkpoints.", callback=opt.at_least(1))] = 1,
) -> None:
    """Pre-train a depth encoder so that depth maps land where CLIP puts the matching RGB renders.

    --batch-size is the pairs of one process's micro-batch: each loss contrasts that many times the
    number of processes; --workers are the DataLoader's reader processes per rank.

    Runs the same under `torchrun --nproc_per_node N -m clip2point pretrain ...` (DDP: NCCL on
    GPUs, gloo on CPU; only rank 0 writes). Ctrl-C saves a checkpoint and exits; continue with
    --resume. The result loads with `c2p classify --depth-encoder RUN/depth_encoder.safetensors`.
    """
    from rich.console import Console

    from clip2point.training.pretrain import PretrainConfig
    from clip2point.training.pretrain import pretrain as run_pretrain

    from ..distributed import process_group, resolve_device

    config = PretrainConfig(
        data=str(data), out=str(run), layout=layout, split=split, model=model, pretrained=pretrained,
        init_weights=str(init) if init else None, epochs=epochs, batch_size=batch_size, accumulate=accumulate,
        optimizer=optimizer, lr=lr, weight_decay=weight_decay, min_lr=min_lr, restart_epochs=restart_epochs,
        n_points=n_points, seed=seed, device=device, workers=workers, cache_image_features=cache_image_features,
        feature_cache_dir=str(feature_cache_dir) if feature_cache_dir else None, bf16=bf16,
        render_backend=render_backend, val=str(val) if val else None, val_views=val_views, val_limit=val_limit,
        val_up=val_up, resume=resume, keep_checkpoints=keep_checkpoints,
    )
    console = Console(stderr=True)
    display = _Display(console)
    try:
        with process_group(resolve_device(device)) as ctx:
            result = run_pretrain(config, on_event=display, ctx=ctx)
    finally:
        display.close()
    if display.active:
        _summary(console, result)
    if result.interrupted:
        if display.active:
            console.print(
                f"interrupted at step {result.steps}; checkpoint saved in {run}/checkpoints. "
                f"Continue with the same command and --resume.", highlight=False,
            )
        raise typer.Exit(130)


class _Display:
    """Rich progress for rank 0 (the library only calls it there): features cache, then steps."""

    def __init__(self, console):
        self.console = console
        self.progress = None
        self.features_task = None
        self.steps_task = None
        self.active = False

    def _start(self):
        from ._progress import progress_bar

        if self.progress is None:
            self.progress = progress_bar(self.console, "[bold]{task.description}", info=True)
            self.progress.start()
            self.active = True

    def __call__(self, event: Event) -> None:
        self._start()
        p, info = self.progress, event.data
        if event.kind == "features":
            if self.features_task is None:
                self.features_task = p.add_task("image features", total=event.total, info="")
            p.update(self.features_task, completed=event.done)
        elif event.kind == "start":
            self._print_start(info)
            self.steps_task = p.add_task("pretrain", total=event.total, completed=event.done, info="")
        elif event.kind == "step" and self.steps_task is not None:
            p.update(self.steps_task, completed=event.done,
                     info=f"epoch {info['epoch'] + 1} loss {info['loss']:.3f} w {info['w']:.3f} "
                          f"lr {info['lr']:.2e} {info['samples_per_s']:.1f}/s")
        elif event.kind == "epoch":
            acc = f" val_acc {info['val_acc']:.4f}" if "val_acc" in info else ""
            means = " ".join(f"{k[:-5]} {v:.4f}" for k, v in info.items() if k.endswith("_mean"))
            p.console.print(f"epoch {info['epoch'] + 1}: {means}{acc}", highlight=False)

    def _print_start(self, info) -> None:
        cache = info.get("cache", {})
        note = "cache hit" if cache.get("hit") else ("cached" if cache.get("enabled") else "no cache")
        self.console.print(
            f"{info['models']} pairs, {info['world_size']} process(es), effective batch {info['effective_batch']}, "
            f"{info['steps_per_epoch']} steps/epoch, image features: {note}", highlight=False,
        )
        skipped = info.get("skipped", [])
        if skipped:
            # Models with unreadable files were left out when the pairs set was opened.
            self.console.print(f"skipped {len(skipped)} model(s) with unusable files:", highlight=False)
            for entry in skipped[:SHOW_SKIPPED]:
                self.console.print(f"  {entry.get('source')}: {entry.get('problem')}", highlight=False, markup=False)
            if len(skipped) > SHOW_SKIPPED:
                self.console.print(f"  ... and {len(skipped) - SHOW_SKIPPED} more (listed in the run's config.json)",
                                   highlight=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _summary(console, result) -> None:
    from rich.table import Table

    table = Table(title="pre-training", show_header=False)
    table.add_row("steps", str(result.steps))
    table.add_row("epochs done", str(result.epochs_done))
    for key in ("loss", "loss_intra", "loss_cross", "w", "val_acc"):
        if key in result.last:
            table.add_row(key, f"{result.last[key]:.4f}")
    table.add_row("processes", str(result.world_size))
    table.add_row("depth encoder", str(result.depth_encoder))
    console.print(table)
