"""Image-depth pre-training (CLIP2Point sec. 3): a depth encoder learns to land where CLIP puts images.

Per sample (see `clip2point.training.pairs.PretrainSamples`): one of the 10 views at random, its RGB render,
and two depth maps of that view rendered at distances d1, d2 = 1 + u/5, u ~ U(-0.5, 0.5). The
depth encoder (a copy of CLIP's visual tower, folded stem, trainable) encodes both maps; CLIP's
own visual tower (frozen) encodes the image, once per render before training
(`clip2point.training.image_features`). Loss: `clip2point.training.losses.BalancedPretrainLoss`.

Batches, under torchrun with R processes: `batch_size` is per process and per micro-batch; the
contrastive negatives of each loss term are the R x batch_size samples of one micro-batch across
all ranks (features are gathered, `clip2point.training.losses.gather_with_grad`); an optimiser step sees
R x batch_size x accumulate samples (the effective batch). The paper's reference is an effective
batch of 256 with all 256 as negatives: accumulation adds samples per step, not negatives.

Optimiser (as the official pretraining.py): LAMB, lr 6e-3, weight decay 1e-4 on every trained
parameter (`optimizer="adamw"` is the alternative). The official code computes each loss inside
one DataParallel replica, so its negatives are one device's share of the batch; here they are
gathered across processes, and config.json records both counts (`negatives_per_loss`,
`negatives_per_loss_official`). Validation (`clip2point.training.zero_shot_validation`) renders
10 views, as the official code does.

Schedule: CosineAnnealingWarmRestarts with T_0 = `restart_epochs` (2) epochs' worth of optimiser
steps, stepped per optimiser step; the floor is lr / 600 (the reference run: 6e-3 -> 1e-5).

Run folder (only rank 0 writes):
    RUN/config.json                 the run's configuration, models, data, world size, version
    RUN/metrics.jsonl               one JSON line per optimiser step (kind "step") and per epoch
                                    (kind "epoch": means, zero-shot accuracy when `val` is given)
    RUN/checkpoints/                `clip2point.training.pretrain_checkpoints`
    RUN/depth_encoder.safetensors   the depth encoder (`encoders.save_depth_encoder`), refreshed
                                    each epoch: `c2p classify --depth-encoder` loads it
    RUN/run.json                    summary at the end (steps, interrupted, per-rank weight digests)

Ctrl-C (SIGINT) or SIGTERM finishes the current optimiser step (all ranks agree on which), saves a
checkpoint and returns; a second Ctrl-C aborts at once. `resume=True` continues from RUN's last
checkpoint (mid-epoch positions included) and ends with the same number of optimiser steps as an
uninterrupted run. Every rank reads the checkpoint on resume, so multi-node runs need RUN on a
shared file system. A resumed run must keep the world size and the options its batches and
schedule depend on (`pretrain_checkpoints.RESUME_MUST_MATCH`: batch size, accumulation, seed,
optimiser, lr, min lr, weight decay, restart period...); `check_resumable` refuses anything else
with one line before any feature caching (more epochs are allowed). Per-sample randomness (view,
distances, point subset) is seeded by (seed, epoch, sample index), and the batch order by (seed,
epoch), so a resumed run sees exactly the batches the uninterrupted one would have.

Under torchrun: `torchrun --nproc_per_node N -m clip2point pretrain DATA RUN ...` (add
--nnodes / --node-rank / --rdzv-endpoint for several machines). The caller sets the process
group up (`clip2point.distributed.process_group`, as for classify, eval and fewshot) and passes
its context; DistributedDataParallel over the depth encoder and w. All ranks build the
image-feature cache together; rank 0 alone validates, writes files and reports events. The others
wait while rank 0 validates after an epoch, so the process group's collective timeout is 2 hours,
not NCCL's 10 minutes (`C2P_DIST_TIMEOUT_MIN` changes it; see `clip2point.distributed`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from clip2point import defaults, option_table
from clip2point.distributed import (
    DistContext,
    any_rank,
    barrier,
    gather_digests,
    mean_across,
    resolve_device,
    weights_digest,
)
from clip2point.errors import Opt, OptionError
from clip2point.events import EventHook, emit

from .image_features import bf16_autocast, cached_image_features, encode_images, ignore_sigint
from .losses import BalancedPretrainLoss
from .pretrain_batches import EpochBatches, collate, micro_batches_in_step
from .pretrain_checkpoints import check_resumable, latest_checkpoint, restore_checkpoint, save_checkpoint
from .zero_shot_validation import zero_shot_accuracy

OPTIMIZERS = option_table.choices("optimizer")
DEFAULT_LR = {"adamw": 5e-5, "lamb": 6e-3}
DEFAULT_WEIGHT_DECAY = {"adamw": 0.05, "lamb": 1e-4}
MIN_LR_RATIO = 1.0 / 600.0


@dataclass
class PretrainConfig:
    """Everything a pre-training run depends on (recorded in RUN/config.json and in checkpoints)."""

    data: str
    out: str
    layout: str = "auto"
    split: str = "train"
    model: str = defaults.MODEL
    pretrained: str = defaults.PRETRAINED
    init_weights: str | None = None
    epochs: int = 100
    batch_size: int = 256
    accumulate: int = 1
    optimizer: str = "lamb"
    lr: float | None = None
    weight_decay: float | None = None
    min_lr: float | None = None
    restart_epochs: int = 2
    n_points: int = defaults.NUM_POINTS
    seed: int = 0
    device: str = "auto"
    workers: int = 0
    cache_image_features: bool = True
    feature_cache_dir: str | None = None
    bf16: bool = True
    fold: bool = True
    render_backend: str = "auto"
    val: str | None = None
    val_views: int = defaults.PRETRAIN_VIEWS
    val_limit: int | None = None
    val_up: str | None = None
    resume: bool = False
    keep_checkpoints: int = 1

    def resolved(self) -> PretrainConfig:
        """A copy with the optimiser-dependent defaults filled in, after checking every option."""
        if self.optimizer not in OPTIMIZERS:
            raise OptionError(Opt("optimizer"), f" must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        for name in ("epochs", "batch_size", "accumulate", "restart_epochs", "n_points", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise OptionError(Opt(name), f" must be at least 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise OptionError(Opt("batch_size"), " must be at least 2 (the other samples of a batch are the negatives)")
        if self.workers < 0:
            raise OptionError(Opt("workers"), f" must not be negative, got {self.workers}")
        lr = DEFAULT_LR[self.optimizer] if self.lr is None else float(self.lr)
        wd = DEFAULT_WEIGHT_DECAY[self.optimizer] if self.weight_decay is None else float(self.weight_decay)
        if lr <= 0 or wd < 0:
            raise OptionError(Opt("lr"), " must be positive and ", Opt("weight_decay"), f" not negative (got {lr}, {wd})")
        min_lr = lr * MIN_LR_RATIO if self.min_lr is None else float(self.min_lr)
        d = asdict(self)
        d.update(lr=lr, weight_decay=wd, min_lr=min_lr)
        return PretrainConfig(**d)


@dataclass
class PretrainResult:
    """What a run did: steps, epochs, whether it was interrupted, where its files are."""

    out: Path
    steps: int
    epochs_done: int
    interrupted: bool
    last: dict = field(default_factory=dict)
    rank_digests: list[str] = field(default_factory=list)
    depth_encoder: Path | None = None
    world_size: int = 1


# ---------------------------------------------------------------------------------------------
# Model and optimiser
# ---------------------------------------------------------------------------------------------


class PretrainModel(nn.Module):
    """The trainable part: the depth encoder and the loss's balance weight (one DDP module).

    `forward(depth[2B, C, S, S], image_features[B, D])`: the first B maps are the d1 renders,
    the last B the d2 renders of the same samples. Returns the loss dict.
    """

    def __init__(self, encoder: nn.Module, criterion: BalancedPretrainLoss):
        super().__init__()
        self.encoder = encoder
        self.criterion = criterion

    def forward(self, depth: torch.Tensor, image_features: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.encoder(depth)
        f1, f2 = features.chunk(2)
        return self.criterion(f1, f2, image_features)


def render_view_pairs(
    points: torch.Tensor,
    views: torch.Tensor,
    distances: torch.Tensor,
    bases: torch.Tensor,
    *,
    image_size: int = defaults.IMAGE_SIZE,
    channels: int = 1,
    backend: str = "auto",
) -> torch.Tensor:
    """Depth maps [2B, C, S, S]: sample b from its own view `views[b]` at `distances[b, 0]` (first B) and `[b, 1]`.

    A distance d is what the official renderer makes of it: the camera sits at d AND the cloud is
    scaled by 1/d first (`Pointclouds.scale_(1 / dist)` in CLIP2Point's render.py), so a jittered
    distance zooms the map as well as shifting its depths; points that end up at or behind the
    camera plane are not drawn (the kernels skip depth <= 0). Each cloud is then turned into its
    camera's frame (p @ basis.T), so one identity basis renders a batch whose samples all look from
    different views.
    """
    from clip2point.kernels import render_depth

    dist = torch.cat([distances[:, 0], distances[:, 1]]).to(points.dtype)
    rot = bases[views]
    zoomed = torch.cat([points, points]) * (1.0 / dist)[:, None, None]
    in_camera = torch.einsum("bnk,bjk->bnj", zoomed, torch.cat([rot, rot]))
    eye = torch.eye(3, dtype=points.dtype, device=points.device)[None]
    maps = render_depth(in_camera, eye, distance=dist, image_size=image_size, channels=channels, backend=backend)
    return maps[:, 0]


def build_optimizer(model: nn.Module, cfg: PretrainConfig) -> torch.optim.Optimizer:
    """LAMB on every trained parameter with one weight decay, as the official pretraining.py
    (`Lamb(model.parameters(), lr=6e-3, weight_decay=1e-4)`: norms, biases and the balance weight w
    decay too); AdamW without weight decay on 1-D parameters (norms, biases, w), the usual recipe."""
    trained = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "lamb":
        from .lamb import Lamb

        return Lamb(trained, lr=cfg.lr, weight_decay=cfg.weight_decay)
    decay = [p for p in trained if p.ndim > 1]
    no_decay = [p for p in trained if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


class _StopFlag:
    """Set by SIGINT (Ctrl-C) or SIGTERM (schedulers' pre-emption, torchrun stopping its workers).

    The loop checks it after each optimiser step (agreed across ranks), saves and returns. A second
    Ctrl-C raises KeyboardInterrupt as usual.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.set = False
        self._previous: dict = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in self.SIGNALS:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.set and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.set = True

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}


class Pretrainer:
    """One pre-training run, in named stages (the public entry point is `pretrain`).

    `run()` = `setup()` (data, models, image-feature cache, batches, optimiser, resume,
    config.json), then per epoch `epoch()` (the optimiser steps; `step()` each) and `end_epoch()`
    (means, validation, checkpoint), then `finish()` (the checkpoint of an interrupted run,
    run.json, the result). Events go to `on_event` on rank 0 only.
    """

    def __init__(self, config: PretrainConfig, on_event: EventHook | None = None, ctx: DistContext | None = None):
        self.config = config
        self.on_event = on_event
        self.given_ctx = ctx
        self.stop = _StopFlag()
        self.interrupted = False
        self.last: dict = {}
        self.epoch_sums: dict[str, float] = {}

    def emit(self, kind: str, done: int | None = None, total: int | None = None, **data) -> None:
        if self.ctx.is_main:
            emit(self.on_event, kind, done, total, **data)

    def run(self) -> PretrainResult:
        self.cfg = self.config.resolved()
        self.out = Path(self.cfg.out)
        ctx = self.given_ctx or DistContext()
        # Each rank of a torchrun group uses its own device; one process uses the device asked for.
        self.ctx = ctx if ctx.distributed else dataclasses.replace(ctx, device=resolve_device(self.cfg.device))
        try:
            self.setup()
            while self.epoch_index < self.cfg.epochs and not self.interrupted:
                self.epoch()
                if self.interrupted:
                    break
                self.end_epoch()
            return self.finish()
        finally:
            self.stop.uninstall()

    # -- setup ------------------------------------------------------------------------------------

    def setup(self) -> None:
        """Check the run folder, then build the models, the image-feature cache, the batches and the
        optimiser (in this order: the seed draws the same initialisation every time), resume or
        start the run folder, and get ready to train."""
        cfg, out = self.cfg, self.out
        checkpoint = latest_checkpoint(out) if out.exists() else None
        if checkpoint is not None and not cfg.resume:
            raise OptionError(f"{out} holds a checkpoint ({checkpoint.name}); continue it with ", Opt("resume"), ", or choose a new folder")
        if checkpoint is not None:
            check_resumable(checkpoint, asdict(cfg), self.ctx.world_size)  # before minutes of feature caching
        torch.manual_seed(cfg.seed)
        self.device = self.ctx.device
        self.amp = cfg.bf16 and self.device.type == "cuda"
        self._build_models()
        self._cache_image_features()
        self._build_batches()
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            self.optimizer, T_0=cfg.restart_epochs * self.steps_per_epoch, T_mult=1, eta_min=cfg.min_lr
        )
        self._start_or_resume(checkpoint)
        self._prepare_training()

    def _build_models(self) -> None:
        from clip2point.models.encoders import build_depth_encoder, load_clip

        from .pairs import open_pairs

        cfg = self.cfg
        self.index = open_pairs(cfg.data, cfg.layout, cfg.split)
        self.bundle = load_clip(cfg.model, cfg.pretrained, device=self.device)
        self.encoder = build_depth_encoder(self.bundle, weights=cfg.init_weights, fold=cfg.fold, trainable=True)
        self.model = PretrainModel(self.encoder, BalancedPretrainLoss()).to(self.device)
        self.image_size = self.encoder.image_size

    def _cache_image_features(self) -> None:
        cfg = self.cfg
        self.features = None
        self.cache_info: dict = {"enabled": cfg.cache_image_features}
        if cfg.cache_image_features:
            t0 = time.perf_counter()
            self.features, cache_path, hit = cached_image_features(
                self.bundle, self.index, self.ctx, image_size=self.image_size, bf16=cfg.bf16,
                cache_dir=cfg.feature_cache_dir, workers=cfg.workers,
                on_event=self.on_event if self.ctx.is_main else None,
            )
            self.cache_info.update(path=str(cache_path), hit=hit, seconds=round(time.perf_counter() - t0, 3))

    def _build_batches(self) -> None:
        from .pairs import PretrainSamples

        cfg, ctx = self.cfg, self.ctx
        self.samples = PretrainSamples(self.index, cfg.n_points, cfg.seed, with_images=not cfg.cache_image_features,
                                       image_size=self.image_size)
        self.sampler = EpochBatches(len(self.samples), cfg.batch_size, world_size=ctx.world_size, rank=ctx.rank, seed=cfg.seed)
        self.loader = torch.utils.data.DataLoader(
            self.samples, batch_sampler=self.sampler, num_workers=cfg.workers, collate_fn=collate,
            pin_memory=self.device.type == "cuda", worker_init_fn=ignore_sigint,
            # Workers are re-created each epoch so that they see the epoch set by `samples.set_epoch`.
            persistent_workers=False,
        )
        self.batches = self.sampler.batches_per_epoch
        self.steps_per_epoch = math.ceil(self.batches / cfg.accumulate)
        self.total_steps = self.steps_per_epoch * cfg.epochs

    def _start_or_resume(self, checkpoint: Path | None) -> None:
        """Restore the checkpoint (every rank), or clear the run folder of an earlier start; rank 0
        cuts metrics.jsonl back to the checkpoint and writes config.json."""
        from clip2point.store.resume import truncate_metrics

        out, ctx = self.out, self.ctx
        self.step_count, self.epoch_index, self.position = 0, 0, 0
        if checkpoint is not None:
            self.step_count, self.epoch_index, self.position = restore_checkpoint(
                checkpoint, self.model, self.optimizer, self.scheduler, asdict(self.cfg), ctx.world_size, self.device,
                self.batches)
        elif ctx.is_main:
            shutil.rmtree(out / "checkpoints", ignore_errors=True)
        self.metrics_file = out / "metrics.jsonl"
        if ctx.is_main:
            out.mkdir(parents=True, exist_ok=True)
            if checkpoint is not None:
                truncate_metrics(self.metrics_file, "step", self.step_count)
            else:
                self.metrics_file.unlink(missing_ok=True)
            self._write_config()

    def _prepare_training(self) -> None:
        """The validation set, DDP, the camera bases; the "start" event; the stop signals."""
        from clip2point.views import camera_bases

        cfg, ctx, bundle = self.cfg, self.ctx, self.bundle
        self.val_set = None
        if cfg.val:
            from .datasets import open_dataset

            self.val_set = open_dataset(cfg.val, "auto", "test", n_points=cfg.n_points, seed=cfg.seed, up=cfg.val_up)
        self.ddp_model: nn.Module = self.model
        if ctx.distributed:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.bases = camera_bases(self.index.views, device=self.device)
        self.image_visual = bundle.model.visual if not cfg.cache_image_features else None
        if cfg.cache_image_features:
            # With the cache the frozen image tower is never run again (validation uses the text tower only).
            bundle.model.visual = None
        self.emit("start", self.step_count, self.total_steps, epoch=self.epoch_index,
                  steps_per_epoch=self.steps_per_epoch, models=len(self.index), world_size=ctx.world_size,
                  cache=self.cache_info, skipped=list(self.index.skipped),
                  effective_batch=cfg.batch_size * ctx.world_size * cfg.accumulate)
        self.stop.install()

    def _write_config(self) -> None:
        from clip2point import __version__
        from clip2point.store.checkpoints import write_json

        cfg, ctx, index, bundle = self.cfg, self.ctx, self.index, self.bundle
        write_json(self.out / "config.json", {
            "config": asdict(cfg), "world_size": ctx.world_size,
            "effective_batch": cfg.batch_size * ctx.world_size * cfg.accumulate,
            # Each loss term contrasts a micro-batch gathered from every process (global negatives);
            # the official code computes it inside each DataParallel replica (one device's share).
            "negatives_per_loss": min(cfg.batch_size, self.sampler.per_rank) * ctx.world_size,
            "negatives_per_loss_official": min(cfg.batch_size, self.sampler.per_rank),
            "negatives": "global: gathered across processes",
            "steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps,
            "model": bundle.model_name, "pretrained": bundle.pretrained, "weights_id": bundle.weights_id,
            "pairs": {"root": str(index.root), "layout": index.layout, "models": len(index),
                      "skipped": len(index.skipped), "skipped_models": index.skipped,
                      "fingerprint": index.fingerprint()},
            "image_feature_cache": self.cache_info, "folded": self.encoder.in_channels == 1,
            "device": str(self.device), "version": __version__,
        })

    # -- one epoch --------------------------------------------------------------------------------

    def epoch(self) -> None:
        """The optimiser steps of one epoch (from `position` when resuming mid-epoch); stops early,
        setting `interrupted`, when a stop signal arrives on any rank."""
        cfg = self.cfg
        self.samples.set_epoch(self.epoch_index)
        self.sampler.set_epoch(self.epoch_index, self.position)
        self.model.train()
        self.micro: list[dict] = []
        self.t_step = time.perf_counter()
        for b, batch in enumerate(self.loader, start=self.position):
            last_micro = (b + 1) % cfg.accumulate == 0 or b + 1 == self.batches
            self.micro_batch(b, batch, last_micro)
            if not last_micro:
                continue
            self.step(b)
            if any_rank(self.ctx, self.stop.set) and self.position < self.batches:
                self.interrupted = True
                break

    def micro_batch(self, b: int, batch: dict, last_micro: bool) -> None:
        """Render, encode and back-propagate one micro-batch (batch `b` of the epoch)."""
        cfg, device = self.cfg, self.device
        points = batch["points"].to(device, non_blocking=True)
        views = batch["view"].to(device)
        if self.features is not None:
            img = self.features[batch["index"], batch["view"]].to(device).float()
        else:
            img = encode_images(self.image_visual, batch["image"].to(device, non_blocking=True), cfg.bf16)
        with torch.no_grad():
            depth = render_view_pairs(points, views, batch["distances"].to(device), self.bases,
                                      image_size=self.image_size, channels=self.encoder.in_channels,
                                      backend=cfg.render_backend)
        # Gradients are all-reduced on the last micro-batch of an optimiser step only.
        no_sync = self.ddp_model.no_sync() if self.ctx.distributed and not last_micro else contextlib.nullcontext()
        # The last step of an epoch may hold fewer micro-batches; each of its micro-batches
        # weighs 1 / (the micro-batches of that step), so the mean stays a mean.
        n_micro = micro_batches_in_step(b, self.batches, cfg.accumulate)
        with no_sync:
            with bf16_autocast(device, self.amp):
                losses = self.ddp_model(depth, img)
            (losses["loss"] / n_micro).backward()
        self.micro.append({k: float(v.detach()) for k, v in losses.items()} | {"samples": len(points)})

    def step(self, b: int) -> None:
        """The optimiser and scheduler step after batch `b`, and its metrics line."""
        optimizer, ctx = self.optimizer, self.ctx
        optimizer.step()
        lr = optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        self.step_count += 1
        self.position = b + 1
        elapsed = time.perf_counter() - self.t_step
        self.t_step = time.perf_counter()
        micro = self.micro
        n_samples = sum(m["samples"] for m in micro) * ctx.world_size
        record = {k: sum(m[k] for m in micro) / len(micro) for k in ("loss", "loss_intra", "loss_cross", "w")}
        record = mean_across(ctx, record)
        record = {"kind": "step", "step": self.step_count, "epoch": self.epoch_index, **record, "lr": lr,
                  "samples_per_s": n_samples / max(elapsed, 1e-9), "time": time.time()}
        self.micro = []
        for k in ("loss", "loss_intra", "loss_cross"):
            self.epoch_sums[k] = self.epoch_sums.get(k, 0.0) + record[k]
        self.epoch_sums["n"] = self.epoch_sums.get("n", 0.0) + 1
        if ctx.is_main:
            with open(self.metrics_file, "a") as f:
                f.write(json.dumps(record) + "\n")
        self.last = record
        self.emit("step", self.step_count, self.total_steps, **_without_kind(record))

    # -- end of epoch -----------------------------------------------------------------------------

    def end_epoch(self) -> None:
        """Epoch means, zero-shot validation (rank 0), the epoch's checkpoint; a pending stop ends the run."""
        cfg, ctx = self.cfg, self.ctx
        self.epoch_index += 1
        self.position = 0
        summary = {"kind": "epoch", "step": self.step_count, "epoch": self.epoch_index - 1}
        n = self.epoch_sums.pop("n", 0.0)
        summary.update({f"{k}_mean": v / n for k, v in self.epoch_sums.items()} if n else {})
        self.epoch_sums = {}
        if self.val_set is not None and ctx.is_main:
            summary.update(zero_shot_accuracy(self.encoder, self.bundle, self.val_set, views=cfg.val_views,
                                              device=self.device, limit=cfg.val_limit, render_backend=cfg.render_backend,
                                              bf16=cfg.bf16))
        barrier(ctx)
        if ctx.is_main:
            with open(self.metrics_file, "a") as f:
                f.write(json.dumps(summary) + "\n")
        self.emit("epoch", self.epoch_index, cfg.epochs, **_without_kind(summary))
        self.last = {**self.last, **summary}
        if ctx.is_main:
            self._save()
        barrier(ctx)
        if any_rank(ctx, self.stop.set) and self.epoch_index < cfg.epochs:
            self.interrupted = True

    def _save(self) -> None:
        """The checkpoint and the depth encoder of the current position (rank 0)."""
        from clip2point import __version__
        from clip2point.models.encoders import save_depth_encoder

        cfg, bundle, model, step, epoch = self.cfg, self.bundle, self.model, self.step_count, self.epoch_index
        info = {"step": step, "epoch": epoch, "position": self.position, "config": asdict(cfg),
                "world_size": self.ctx.world_size, "version": __version__}
        folder = save_checkpoint(self.out, model=model, optimizer=self.optimizer, scheduler=self.scheduler, info=info,
                                 device=self.device, keep=cfg.keep_checkpoints)
        save_depth_encoder(model.encoder, self.out / "depth_encoder.safetensors", meta={
            "model": bundle.model_name, "pretrained": bundle.pretrained, "weights_id": bundle.weights_id,
            "trained_by": "c2p pretrain", "step": step, "epoch": epoch, "w": float(model.criterion.w.detach()),
        })
        self.emit("checkpoint", path=str(folder), step=step, epoch=epoch)

    # -- finish -----------------------------------------------------------------------------------

    def finish(self) -> PretrainResult:
        """Save a stopped run mid-epoch, write run.json (per-rank weight digests) and return the result."""
        from clip2point import __version__

        ctx, out = self.ctx, self.out
        if self.interrupted and ctx.is_main and self.position > 0:
            self._save()
        if self.interrupted:
            self.emit("interrupted", step=self.step_count, epoch=self.epoch_index, position=self.position)
        digests = gather_digests(ctx, weights_digest(self.model.state_dict()))
        result = PretrainResult(out, self.step_count, self.epoch_index, self.interrupted, self.last, digests,
                                out / "depth_encoder.safetensors", ctx.world_size)
        if ctx.is_main:
            from clip2point.store.checkpoints import write_json

            write_json(out / "run.json", {
                "steps": self.step_count, "epochs_done": self.epoch_index, "interrupted": self.interrupted,
                "world_size": ctx.world_size, "rank_weight_digests": digests, "ranks_in_sync": len(set(digests)) == 1,
                "last": self.last, "depth_encoder": str(result.depth_encoder), "version": __version__,
            })
        barrier(ctx)
        return result


def _without_kind(record: dict) -> dict:
    """A metrics line as event data (the event has its own kind)."""
    return {k: v for k, v in record.items() if k != "kind"}


def pretrain(config: PretrainConfig, on_event: EventHook | None = None, ctx: DistContext | None = None) -> PretrainResult:
    """Run (or resume) image-depth pre-training; see the module docstring for files and semantics.

    `on_event(Event)` is called on rank 0 only, with kinds "start" (done / total: steps), "features"
    (image-feature cache: renders), "step" (done / total: steps; the metrics line), "epoch" (done /
    total: epochs; the epoch's means), "checkpoint" and "interrupted". Under torchrun pass the
    context of `clip2point.distributed.process_group` as `ctx`. The stages are `Pretrainer`'s.
    """
    return Pretrainer(config, on_event, ctx).run()
