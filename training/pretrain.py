"""Image-depth pre-training (CLIP2Point sec. 3): a depth encoder learns to land where CLIP puts images.

Per sample (see `clip2point.training.pairs.PretrainSamples`): one of the 10 views at random, its RGB render,
and two depth maps of that view rendered at distances d1, d2 = 1 + u/5, u ~ U(-0.5, 0.5). The
depth encoder (a copy of CLIP's visual tower, folded stem, trainable) encodes both maps; CLIP's
own visual tower (frozen) encodes the image. Loss: `clip2point.training.losses.BalancedPretrainLoss`.

Image-feature cache. The image encoder is frozen and the renders never change, so the features of
all (model, view) renders are computed once, before training, and stored as safetensors under
`paths.cache_dir("pretrain_image_features")` keyed by (model, weights id, pairs fingerprint,
image size). With the cache (the default) training never runs the image encoder and never reads
an image file.

Batches, under torchrun with R processes: `batch_size` is per process and per micro-batch; the
contrastive negatives of each loss term are the R x batch_size samples of one micro-batch across
all ranks (features are gathered, `clip2point.training.losses.gather_with_grad`); an optimiser step sees
R x batch_size x accumulate samples (the effective batch). The paper's reference is an effective
batch of 256 with all 256 as negatives: accumulation adds samples per step, not negatives.

Optimiser (as the official pretraining.py): LAMB, lr 6e-3, weight decay 1e-4 on every trained
parameter (`--optimizer adamw` is the alternative). The official code computes each loss inside
one DataParallel replica, so its negatives are one device's share of the batch; here they are
gathered across processes, and config.json records both counts (`negatives_per_loss`,
`negatives_per_loss_official`). Validation renders 10 views, as the official code does.

Schedule: CosineAnnealingWarmRestarts with T_0 = `restart_epochs` (2) epochs' worth of optimiser
steps, stepped per optimiser step; the floor is lr / 600 (the reference run: 6e-3 -> 1e-5).

Run folder (only rank 0 writes):
    RUN/config.json                 the run's configuration, models, data, world size, version
    RUN/metrics.jsonl               one JSON line per optimiser step (kind "step") and per epoch
                                    (kind "epoch": means, zero-shot accuracy when --val is given)
    RUN/checkpoints/latest.json     {"path": "step-000123"}: the last complete checkpoint
    RUN/checkpoints/step-N/         state.safetensors (weights, w, optimiser tensors, RNG) and
                                    state.json (epoch, position, step, optimiser / scheduler scalars)
    RUN/depth_encoder.safetensors   the depth encoder (`encoders.save_depth_encoder`), refreshed
                                    each epoch: `c2p classify --depth-encoder` loads it
    RUN/run.json                    summary at the end (steps, interrupted, per-rank weight digests)

A checkpoint folder is written under a temporary name and renamed, then latest.json is replaced
atomically, so a run killed at any moment resumes from its last complete checkpoint. Ctrl-C
(SIGINT) or SIGTERM finishes the current optimiser step (all ranks agree on which), saves a
checkpoint and returns; a second Ctrl-C aborts at once. `resume=True` continues from RUN's last
checkpoint (mid-epoch positions included) and ends with the same number of optimiser steps as an
uninterrupted run. Every rank reads the checkpoint on resume, so multi-node runs need RUN on a
shared file system. A resumed run must keep the world size and the options its batches and
schedule depend on (`RESUME_MUST_MATCH`: batch size, accumulation, seed, optimiser, lr, min lr,
weight decay, restart period...); `check_resumable` refuses anything else with one line before
any feature caching (more --epochs is allowed). Per-sample randomness (view, distances, point
subset) is seeded by (seed, epoch, sample index), and the batch order by (seed, epoch), so a
resumed run sees exactly the batches the uninterrupted one would have.

Under torchrun: `torchrun --nproc_per_node N -m clip2point pretrain DATA RUN ...` (add
--nnodes / --node-rank / --rdzv-endpoint for several machines). NCCL on CUDA (one GPU per
LOCAL_RANK), gloo on CPU; DistributedDataParallel over the depth encoder and w. All ranks build
the image-feature cache together (each an interleaved share of the renders, see
`cached_image_features`); rank 0 alone validates, writes files and shows progress. The others
wait while rank 0 validates after an epoch, so the process group's collective timeout is 2 hours,
not NCCL's 10 minutes (`C2P_DIST_TIMEOUT_MIN` changes it; see `clip2point.training.distributed`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from clip2point import defaults, option_table
from clip2point.errors import CheckpointError, Opt, OptionError, UsageError

from . import distributed as dist_utils
from .losses import BalancedPretrainLoss

OPTIMIZERS = option_table.choices("optimizer")
DEFAULT_LR = {"adamw": 5e-5, "lamb": 6e-3}
DEFAULT_WEIGHT_DECAY = {"adamw": 0.05, "lamb": 1e-4}
MIN_LR_RATIO = 1.0 / 600.0
CHECKPOINT_FORMAT = "c2p-pretrain-checkpoint"
# Options a resumed run must share with its checkpoint (and the world size, recorded apart).
RESUME_MUST_MATCH = ("model", "batch_size", "accumulate", "optimizer", "fold", "seed", "lr", "min_lr",
                     "weight_decay", "restart_epochs")
FEATURE_CACHE_VERSION = 1

EventHook = Callable[[str, dict], None]


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
# Model pieces
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


# ---------------------------------------------------------------------------------------------
# Image features (frozen encoder) and their cache
# ---------------------------------------------------------------------------------------------


def _autocast(device: torch.device, enabled: bool):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")


def encode_images(visual: nn.Module, images: torch.Tensor, bf16: bool = True) -> torch.Tensor:
    """Frozen image features [B, D] (float32) of CLIP-normalised images [B, 3, S, S]."""
    with torch.no_grad(), _autocast(images.device, bf16):
        return visual(images).float()


def feature_cache_path(bundle, index, image_size: int, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the image features of a pairs set under a given CLIP model are cached."""
    import hashlib

    from clip2point import __version__
    from clip2point.store.paths import cache_dir as default_cache_dir

    key = json.dumps(
        {
            "model": bundle.model_name,
            "weights": bundle.weights_id,
            "pairs": index.fingerprint(),
            "root": str(Path(index.root).resolve()),
            "image_size": image_size,
            "cache_version": FEATURE_CACHE_VERSION,
            "c2p": __version__,
        },
        sort_keys=True,
    )
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir("pretrain_image_features")
    return folder / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.safetensors"


def compute_image_features(
    visual: nn.Module,
    index,
    device: torch.device,
    *,
    image_size: int = defaults.IMAGE_SIZE,
    batch_size: int = 64,
    bf16: bool = True,
    workers: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
    shard: tuple[int, int] = (0, 1),
) -> torch.Tensor:
    """float16 [M, V, D] (CPU) features of every render of every model of a pairs set (`workers` decode PNGs).

    `shard=(k, n)` computes only every n-th render starting at the k-th (the rest stay zero), so n
    ranks split the work and sum their tables; every shard must be non-empty.
    """
    jobs = [(m, v) for m in range(len(index.models)) for v in range(len(index.models[m].image_paths))]
    jobs = jobs[shard[0]::shard[1]]
    n_views = max(len(m.image_paths) for m in index.models)
    renders = _Renders(index, jobs, image_size)
    loader = torch.utils.data.DataLoader(renders, batch_size=batch_size, num_workers=workers,
                                         worker_init_fn=_ignore_sigint, pin_memory=device.type == "cuda")
    out: torch.Tensor | None = None
    done = 0
    for images, (ms, vs) in loader:
        feats = encode_images(visual, images.to(device, non_blocking=True), bf16).to("cpu", torch.float16)
        if out is None:
            out = torch.zeros(len(index.models), n_views, feats.shape[1], dtype=torch.float16)
        out[ms, vs] = feats
        done += len(feats)
        if on_progress is not None:
            on_progress(done, len(jobs))
    assert out is not None
    return out


class _Renders(torch.utils.data.Dataset):
    """(CLIP-normalised image, (model, view)) for every render of a pairs set."""

    def __init__(self, index, jobs: list[tuple[int, int]], image_size: int):
        self.index, self.jobs, self.image_size = index, jobs, image_size

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int):
        from .pairs import image_to_tensor, load_image

        m, v = self.jobs[i]
        return image_to_tensor(load_image(self.index.models[m].image_paths[v], self.image_size)), (m, v)


def _ignore_sigint(_worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C to the main process, which saves a checkpoint and stops them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def cached_image_features(
    bundle,
    index,
    ctx: dist_utils.DistContext,
    *,
    image_size: int,
    bf16: bool,
    cache_dir: str | None = None,
    workers: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, Path, bool]:
    """The image features of a pairs set: read from the cache, or computed and stored.

    Every rank reads the cache; if any rank lacks it (a first run, or a cache folder that is not
    shared between nodes), all ranks compute it together, each an interleaved share of the
    renders, and sum their tables (the shares are disjoint); rank 0 writes the file. No rank
    waits while another one works alone. Returns (features, path, whether they came from the cache).
    """
    from clip2point.store.checkpoints import load_tensors, save_tensors

    path = feature_cache_path(bundle, index, image_size, cache_dir)

    def read() -> torch.Tensor | None:
        if not path.is_file():
            return None
        try:
            t = load_tensors(path).get("features")
        except CheckpointError:
            return None  # a corrupt entry is recomputed and overwritten
        return t if t is not None and t.ndim == 3 and t.shape[0] == len(index.models) else None

    feats = read()
    if not dist_utils.any_rank(ctx, feats is None):
        return feats, path, True
    n_jobs = sum(len(m.image_paths) for m in index.models)
    # Fewer renders than ranks (tiny sets only): each rank computes them all rather than hold empty shards.
    shard = (ctx.rank, ctx.world_size) if n_jobs >= ctx.world_size else (0, 1)
    feats = compute_image_features(
        bundle.model.visual, index, ctx.device, image_size=image_size, bf16=bf16, workers=workers,
        on_progress=on_progress, shard=shard,
    )
    if shard[1] > 1:
        feats = dist_utils.sum_across(ctx, feats)
    if ctx.is_main:
        try:
            save_tensors(path, {"features": feats}, metadata={"model": bundle.model_name, "weights_id": bundle.weights_id})
        except OSError:
            pass  # a read-only cache folder only costs the next run the recomputation
    return feats, path, False


# ---------------------------------------------------------------------------------------------
# Sampling batches (deterministic per epoch, sharded per rank, resumable mid-epoch)
# ---------------------------------------------------------------------------------------------


class EpochBatches(torch.utils.data.Sampler):
    """Batches of indices for one rank: a seeded permutation per epoch, padded to a multiple of the
    world size (like DistributedSampler), sharded rank::world, cut into full batches.

    A shard smaller than one batch gives a single smaller batch (at least 2 samples needed).
    `start` skips the first batches (resuming mid-epoch).
    """

    def __init__(self, n: int, batch_size: int, *, world_size: int = 1, rank: int = 0, seed: int = 0):
        super().__init__()
        self.n, self.batch_size, self.world, self.rank, self.seed = n, batch_size, world_size, rank, seed
        self.per_rank = math.ceil(n / world_size)
        self.batch = min(batch_size, self.per_rank)
        if self.batch < 2:
            raise UsageError(
                f"{n} pairs over {world_size} process(es) leave fewer than 2 per batch (contrastive losses need negatives)"
            )
        self.batches_per_epoch = self.per_rank // self.batch
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = int(epoch), int(start)

    def epoch_indices(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        total = self.per_rank * self.world
        perm = (perm * math.ceil(total / self.n))[:total]
        return perm[self.rank::self.world]

    def __iter__(self):
        mine = self.epoch_indices()
        for b in range(self.start, self.batches_per_epoch):
            yield mine[b * self.batch:(b + 1) * self.batch]

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start


# ---------------------------------------------------------------------------------------------
# Optimiser and checkpoints
# ---------------------------------------------------------------------------------------------


def micro_batches_in_step(b: int, batches: int, accumulate: int) -> int:
    """How many micro-batches the optimiser step holding batch `b` (of an epoch of `batches`) has.

    `accumulate`, except for the last step of an epoch, which holds what is left.
    """
    return min(accumulate, batches - (b // accumulate) * accumulate)



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


def latest_checkpoint(out: str | os.PathLike) -> Path | None:
    """The folder of RUN's last complete checkpoint, or None. latest.json must name a `step-N`
    folder of RUN/checkpoints (`clip2point.store.run_files.checkpoint_folder`): resume never reads
    outside the run folder."""
    from clip2point.store.run_files import checkpoint_folder

    root = Path(out) / "checkpoints"
    folder = checkpoint_folder(root)
    if folder is None:
        return None
    if not (folder / "state.safetensors").is_file() or not (folder / "state.json").is_file():
        raise CheckpointError(f"{root / 'latest.json'}: points to {folder.name}, which is incomplete or missing")
    return folder


def save_checkpoint(
    out: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    info: dict,
    keep: int = 1,
) -> Path:
    """Write RUN/checkpoints/step-N atomically and point latest.json at it; prune older ones."""
    from clip2point.store.checkpoints import optimizer_state, save_tensors, write_json

    root = out / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{info['step']:08d}"
    tmp = root / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt_tensors, opt_meta = optimizer_state(optimizer)
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    save_tensors(tmp / "state.safetensors", tensors)
    write_json(tmp / "state.json", {
        "format": CHECKPOINT_FORMAT, **info, "optimizer": opt_meta, "scheduler": scheduler.state_dict(),
    })
    final = root / name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    write_json(root / "latest.json", {"path": name, "step": info["step"], "epoch": info["epoch"]})
    kept = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))
    for old in kept[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines written after the checkpoint a run resumes from (they will be redone)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
    from clip2point.store.atomic import atomic_write_bytes

    atomic_write_bytes(path, ("\n".join(keep) + "\n" if keep else "").encode())


# ---------------------------------------------------------------------------------------------
# Zero-shot validation
# ---------------------------------------------------------------------------------------------


def zero_shot_accuracy(
    encoder: nn.Module,
    bundle,
    dataset,
    *,
    views: int = defaults.ZERO_SHOT_VIEWS,
    device: torch.device,
    batch_size: int = 32,
    limit: int | None = None,
    render_backend: str = "auto",
    bf16: bool = True,
) -> dict:
    """Top-1 zero-shot accuracy of the depth encoder being trained, on a labelled dataset
    (`clip2point.training.datasets`), through `clip2point.evaluate.evaluate_classifier` with the
    default prompt. Samples that cannot be read are skipped and counted."""
    from clip2point.evaluate import evaluate_classifier
    from clip2point.models.classifier import DepthMapClassifier, PointCloudClassifier, logit_scale_of
    from clip2point.models.prompts import text_features

    labels = list(dataset.labels)
    text = text_features(bundle, labels).to(device)
    head = DepthMapClassifier(encoder, text, logit_scale_of(bundle.model), labels, views).to(device)

    def run_head(depth: torch.Tensor) -> torch.Tensor:
        with _autocast(device, bf16):
            return head(depth)

    clf = PointCloudClassifier(run_head, labels, views, in_channels=head.in_channels, device=device,
                               image_size=getattr(encoder, "image_size", defaults.IMAGE_SIZE),
                               render_backend=render_backend)
    was_training = encoder.training
    encoder.eval()
    try:
        report = evaluate_classifier(clf, dataset, list(range(len(labels))), batch_size, limit=limit)
    finally:
        encoder.train(was_training)
    total = report["n"]
    return {"val_acc": report["top1"] if total else float("nan"), "val_samples": total,
            "val_skipped": len(report["skipped"])}


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


def _collate(items: list[dict]) -> dict:
    out = {
        "index": torch.tensor([it["index"] for it in items]),
        "view": torch.tensor([it["view"] for it in items]),
        "points": torch.stack([it["points"] for it in items]),
        "distances": torch.stack([it["distances"] for it in items]),
    }
    if "image" in items[0]:
        out["image"] = torch.stack([it["image"] for it in items])
    return out


class Pretrainer:
    """One pre-training run, in named stages (the public entry point is `pretrain`).

    `run()` = `setup()` (process group, data, models, image-feature cache, batches, optimiser,
    resume, config.json), then per epoch `epoch()` (the optimiser steps; `step()` each) and
    `end_epoch()` (means, validation, checkpoint), then `finish()` (the checkpoint of an interrupted
    run, run.json, the result). `on_event(kind, info)` is called on rank 0 only.
    """

    def __init__(self, config: PretrainConfig, on_event: EventHook | None = None):
        self.config = config
        self.on_event = on_event
        self.stop = _StopFlag()
        self.interrupted = False
        self.last: dict = {}
        self.epoch_sums: dict[str, float] = {}

    def run(self) -> PretrainResult:
        from clip2point.distributed import resolve_device

        self.cfg = self.config.resolved()
        self.out = Path(self.cfg.out)
        self.ctx = dist_utils.setup(resolve_device(self.cfg.device))
        self.emit: EventHook = (self.on_event if (self.on_event is not None and self.ctx.is_main)
                                else (lambda kind, info: None))
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
            dist_utils.teardown(self.ctx)

    # -- setup ------------------------------------------------------------------------------------

    def setup(self) -> None:
        from clip2point.models.encoders import build_depth_encoder, load_clip
        from clip2point.views import camera_bases

        from .pairs import PretrainSamples, open_pairs

        cfg, out, ctx, emit = self.cfg, self.out, self.ctx, self.emit
        checkpoint = latest_checkpoint(out) if out.exists() else None
        if checkpoint is not None and not cfg.resume:
            raise OptionError(f"{out} holds a checkpoint ({checkpoint.name}); continue it with ", Opt("resume"), ", or choose a new folder")
        if checkpoint is not None:
            check_resumable(checkpoint, cfg, ctx.world_size)  # before minutes of feature caching
        torch.manual_seed(cfg.seed)
        self.device = device = ctx.device
        self.amp = cfg.bf16 and device.type == "cuda"

        self.index = index = open_pairs(cfg.data, cfg.layout, cfg.split)
        self.bundle = bundle = load_clip(cfg.model, cfg.pretrained, device=device)
        self.encoder = encoder = build_depth_encoder(bundle, weights=cfg.init_weights, fold=cfg.fold, trainable=True)
        self.model = model = PretrainModel(encoder, BalancedPretrainLoss()).to(device)
        self.image_size = image_size = encoder.image_size

        self.features = None
        self.cache_info: dict = {"enabled": cfg.cache_image_features}
        if cfg.cache_image_features:
            t0 = time.perf_counter()
            self.features, cache_path, hit = cached_image_features(
                bundle, index, ctx, image_size=image_size, bf16=cfg.bf16, cache_dir=cfg.feature_cache_dir,
                workers=cfg.workers, on_progress=lambda done, total: emit("features", {"done": done, "total": total}),
            )
            self.cache_info.update(path=str(cache_path), hit=hit, seconds=round(time.perf_counter() - t0, 3))

        self.samples = PretrainSamples(index, cfg.n_points, cfg.seed, with_images=not cfg.cache_image_features,
                                       image_size=image_size)
        self.sampler = EpochBatches(len(self.samples), cfg.batch_size, world_size=ctx.world_size, rank=ctx.rank, seed=cfg.seed)
        self.loader = torch.utils.data.DataLoader(
            self.samples, batch_sampler=self.sampler, num_workers=cfg.workers, collate_fn=_collate,
            pin_memory=device.type == "cuda", worker_init_fn=_ignore_sigint,
            # Workers are re-created each epoch so that they see the epoch set by `samples.set_epoch`.
            persistent_workers=False,
        )
        self.batches = self.sampler.batches_per_epoch
        self.steps_per_epoch = math.ceil(self.batches / cfg.accumulate)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.optimizer = build_optimizer(model, cfg)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            self.optimizer, T_0=cfg.restart_epochs * self.steps_per_epoch, T_mult=1, eta_min=cfg.min_lr
        )

        self.step_count, self.epoch_index, self.position = 0, 0, 0
        if checkpoint is not None:
            self.step_count, self.epoch_index, self.position = _restore(
                checkpoint, model, self.optimizer, self.scheduler, cfg, ctx, self.batches)
        elif ctx.is_main:
            shutil.rmtree(out / "checkpoints", ignore_errors=True)
        if ctx.is_main:
            out.mkdir(parents=True, exist_ok=True)
            if checkpoint is not None:
                _truncate_metrics(out / "metrics.jsonl", self.step_count)
            else:
                (out / "metrics.jsonl").unlink(missing_ok=True)
            self._write_config()

        self.val_set = None
        if cfg.val:
            from clip2point.training.datasets import open_dataset

            self.val_set = open_dataset(cfg.val, "auto", "test", n_points=cfg.n_points, seed=cfg.seed, up=cfg.val_up)

        self.ddp_model: nn.Module = model
        if ctx.distributed:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        self.bases = camera_bases(index.views, device=device)
        self.image_visual = bundle.model.visual if not cfg.cache_image_features else None
        if cfg.cache_image_features:
            # With the cache the frozen image tower is never run again (validation uses the text tower only).
            bundle.model.visual = None

        emit("start", {"total_steps": self.total_steps, "step": self.step_count, "epoch": self.epoch_index,
                       "steps_per_epoch": self.steps_per_epoch, "models": len(index), "world_size": ctx.world_size,
                       "cache": self.cache_info, "skipped": list(index.skipped),
                       "effective_batch": cfg.batch_size * ctx.world_size * cfg.accumulate})
        self.stop.install()
        self.metrics_file = out / "metrics.jsonl"

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
            if dist_utils.any_rank(self.ctx, self.stop.set) and self.position < self.batches:
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
            with _autocast(device, self.amp):
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
        record = dist_utils.mean_across(ctx, record)
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
        self.emit("step", record)

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
        dist_utils.barrier(ctx)
        if ctx.is_main:
            with open(self.metrics_file, "a") as f:
                f.write(json.dumps(summary) + "\n")
        self.emit("epoch", summary)
        self.last = {**self.last, **summary}
        if ctx.is_main:
            self._write_outputs()
        dist_utils.barrier(ctx)
        if dist_utils.any_rank(ctx, self.stop.set) and self.epoch_index < cfg.epochs:
            self.interrupted = True

    def _write_outputs(self) -> None:
        from clip2point.models.encoders import save_depth_encoder

        _write_outputs(self.out, self.model, self.optimizer, self.scheduler, self.cfg, self.bundle, self.step_count,
                       self.epoch_index, self.position, keep=self.cfg.keep_checkpoints, save_encoder=save_depth_encoder,
                       emit=self.emit, world_size=self.ctx.world_size)

    # -- finish -----------------------------------------------------------------------------------

    def finish(self) -> PretrainResult:
        """Save a stopped run mid-epoch, write run.json (per-rank weight digests) and return the result."""
        from clip2point import __version__

        ctx, out = self.ctx, self.out
        if self.interrupted and ctx.is_main and self.position > 0:
            self._write_outputs()
        if self.interrupted:
            self.emit("interrupted", {"step": self.step_count, "epoch": self.epoch_index, "position": self.position})
        digests = dist_utils.gather_digests(ctx, dist_utils.weights_digest(self.model.state_dict()))
        result = PretrainResult(out, self.step_count, self.epoch_index, self.interrupted, self.last, digests,
                                out / "depth_encoder.safetensors", ctx.world_size)
        if ctx.is_main:
            from clip2point.store.checkpoints import write_json

            write_json(out / "run.json", {
                "steps": self.step_count, "epochs_done": self.epoch_index, "interrupted": self.interrupted,
                "world_size": ctx.world_size, "rank_weight_digests": digests, "ranks_in_sync": len(set(digests)) == 1,
                "last": self.last, "depth_encoder": str(result.depth_encoder), "version": __version__,
            })
        dist_utils.barrier(ctx)
        return result


def pretrain(config: PretrainConfig, on_event: EventHook | None = None) -> PretrainResult:
    """Run (or resume) image-depth pre-training; see the module docstring for files and semantics.

    `on_event(kind, info)` is called on rank 0 only, with kinds "start", "features" (cache
    progress: done, total), "step" (the metrics line), "epoch", "checkpoint" and "interrupted".
    The stages are `Pretrainer`'s.
    """
    return Pretrainer(config, on_event).run()


def _write_outputs(out, model, optimizer, scheduler, cfg, bundle, step, epoch, position, *, keep, save_encoder, emit,
                   world_size) -> None:
    from clip2point import __version__

    info = {"step": step, "epoch": epoch, "position": position, "config": asdict(cfg), "world_size": world_size,
            "version": __version__}
    folder = save_checkpoint(out, model=model, optimizer=optimizer, scheduler=scheduler, info=info, keep=keep)
    save_encoder(model.encoder, out / "depth_encoder.safetensors", meta={
        "model": bundle.model_name, "pretrained": bundle.pretrained, "weights_id": bundle.weights_id,
        "trained_by": "c2p pretrain", "step": step, "epoch": epoch, "w": float(model.criterion.w.detach()),
    })
    emit("checkpoint", {"path": str(folder), "step": step, "epoch": epoch})


def check_resumable(folder: Path, cfg: PretrainConfig, world_size: int) -> dict:
    """The checkpoint's state.json, after checking that this run may continue it.

    Raises UsageError naming every option (and the world size) that differs from the saved run:
    batch positions, the batch order and the schedule's period depend on them, and the restored
    optimiser and scheduler states would silently keep the old lr, floor and decay.
    """
    from clip2point.store.checkpoints import read_json
    from clip2point.store.run_files import PRETRAIN_STATE, check_fields

    meta = read_json(folder / "state.json")
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{folder / 'state.json'}: not a c2p pre-training checkpoint")
    check_fields(folder / "state.json", meta, PRETRAIN_STATE)
    saved = meta.get("config") or {}
    mismatches = [(f"--{key.replace('_', '-')}", saved[key], getattr(cfg, key)) for key in RESUME_MUST_MATCH
                  if key in saved and saved[key] != getattr(cfg, key)]
    if "world_size" in meta and int(meta["world_size"]) != world_size:
        mismatches.insert(0, ("world size (processes)", int(meta["world_size"]), world_size))
    if mismatches:
        what = ", ".join(f"{name} {old!r} (now {new!r})" for name, old, new in mismatches)
        raise UsageError(f"{folder}: saved with {what}; resume with the same settings, or start a new run folder")
    return meta


def _restore(folder: Path, model, optimizer, scheduler, cfg: PretrainConfig, ctx, batches: int) -> tuple[int, int, int]:
    """Load a checkpoint into the model, optimiser and scheduler; returns (step, epoch, position)."""
    from clip2point.store.checkpoints import load_optimizer_state, load_tensors
    from clip2point.store.run_files import check_rng_tensors

    meta = check_resumable(folder, cfg, ctx.world_size)
    tensors = load_tensors(folder / "state.safetensors", device="cpu")
    check_rng_tensors(tensors, folder / "state.safetensors", ["rng.torch", "rng.cuda"])
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state, strict=True)
        load_optimizer_state(optimizer, tensors, meta["optimizer"])
        scheduler.load_state_dict(meta["scheduler"])
    except (RuntimeError, KeyError, ValueError) as e:
        raise CheckpointError(f"{folder}: does not fit this model ({str(e).splitlines()[0]})") from e
    torch.set_rng_state(tensors["rng.torch"])
    position = int(meta.get("position", 0))
    if position >= batches:
        raise CheckpointError(f"{folder}: stopped at batch {position} of an epoch of {batches}; the data changed")
    return int(meta["step"]), int(meta["epoch"]), position


def alignment_margin(
    encoder: nn.Module,
    index,
    image_features: torch.Tensor,
    *,
    n_points: int = defaults.NUM_POINTS,
    max_models: int | None = None,
    device: torch.device | str = "cpu",
    render_backend: str = "auto",
    batch_size: int = 32,
) -> dict:
    """How well depth features point at their own image's feature (a retrieval diagnostic).

    For each model i (up to `max_models`) and view v, the depth map of its cloud (first
    `n_points` points, distance 1) is encoded; with cosines s(i, j) = cos(f_depth(i, v),
    f_img(j, v)) against the images of the same view of every model j:
    `margin` = mean over (i, v) of s(i, i) - mean_{j != i} s(i, j), `own` and `other` the two
    terms, `top1` the fraction of (i, v) whose own image is the most similar. Chance: margin 0,
    top1 1 / models.
    """
    import torch.nn.functional as F

    from clip2point.views import camera_bases

    from .pairs import load_points, normalize_sample

    device = torch.device(device)
    m = len(index.models) if max_models is None else min(max_models, len(index.models))
    n_views = image_features.shape[1]
    bases = camera_bases(index.views[:n_views], device=device)
    was_training = encoder.training
    encoder.eval()
    depth_feats = []
    try:
        with torch.no_grad():
            clouds = torch.stack([torch.from_numpy(normalize_sample(load_points(index.models[i].points_path)[:n_points]))
                                  for i in range(m)]).to(device)
            for v in range(n_views):
                views = torch.full((m,), v, device=device)
                dist = torch.ones(m, 2, device=device)
                for s in range(0, m, batch_size):
                    maps = render_view_pairs(clouds[s:s + batch_size], views[s:s + batch_size], dist[s:s + batch_size], bases,
                                             image_size=getattr(encoder, "image_size", 224),
                                             channels=getattr(encoder, "in_channels", 1), backend=render_backend)
                    depth_feats.append((v, s, encoder(maps[: len(maps) // 2]).float()))
    finally:
        encoder.train(was_training)
    own, other, top1 = [], [], []
    img = F.normalize(image_features[:m].float().to(device), dim=-1)
    for v, s, f in depth_feats:
        sims = F.normalize(f, dim=-1) @ img[:, v].t()
        rows = torch.arange(len(f), device=device)
        cols = rows + s
        own_s = sims[rows, cols]
        mask = torch.ones_like(sims, dtype=torch.bool)
        mask[rows, cols] = False
        other.append((sims * mask).sum(1) / mask.sum(1))
        own.append(own_s)
        top1.append((sims.argmax(1) == cols).float())
    own_t, other_t, top1_t = torch.cat(own), torch.cat(other), torch.cat(top1)
    return {
        "margin": float((own_t - other_t).mean()),
        "own": float(own_t.mean()),
        "other": float(other_t.mean()),
        "top1": float(top1_t.mean()),
        "models": m,
    }
