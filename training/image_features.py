"""The frozen image side of pre-training: CLIP's visual tower on the RGB renders, and its cache.

The image encoder is frozen and the renders never change, so the features of all (model, view)
renders are computed once, before training, and stored as safetensors under
`paths.cache_dir("pretrain_image_features")` keyed by (model, weights id, pairs fingerprint,
image size). With the cache (the default) training never runs the image encoder and never reads
an image file. Under torchrun every rank computes an interleaved share of the renders
(`cached_image_features`).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import torch
from torch import nn

from clip2point import defaults
from clip2point.distributed import DistContext, any_rank, sum_across
from clip2point.errors import CheckpointError
from clip2point.events import EventHook, emit

FEATURE_CACHE_VERSION = 1


def bf16_autocast(device: torch.device, enabled: bool):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")


def encode_images(visual: nn.Module, images: torch.Tensor, bf16: bool = True) -> torch.Tensor:
    """Frozen image features [B, D] (float32) of CLIP-normalised images [B, 3, S, S]."""
    with torch.no_grad(), bf16_autocast(images.device, bf16):
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
    on_event: EventHook | None = None,
    shard: tuple[int, int] = (0, 1),
) -> torch.Tensor:
    """float16 [M, V, D] (CPU) features of every render of every model of a pairs set (`workers` decode PNGs).

    `shard=(k, n)` computes only every n-th render starting at the k-th (the rest stay zero), so n
    ranks split the work and sum their tables; every shard must be non-empty. Reports "features"
    events (renders done of this shard's total).
    """
    jobs = [(m, v) for m in range(len(index.models)) for v in range(len(index.models[m].image_paths))]
    jobs = jobs[shard[0]::shard[1]]
    n_views = max(len(m.image_paths) for m in index.models)
    renders = _Renders(index, jobs, image_size)
    loader = torch.utils.data.DataLoader(renders, batch_size=batch_size, num_workers=workers,
                                         worker_init_fn=ignore_sigint, pin_memory=device.type == "cuda")
    out: torch.Tensor | None = None
    done = 0
    for images, (ms, vs) in loader:
        feats = encode_images(visual, images.to(device, non_blocking=True), bf16).to("cpu", torch.float16)
        if out is None:
            out = torch.zeros(len(index.models), n_views, feats.shape[1], dtype=torch.float16)
        out[ms, vs] = feats
        done += len(feats)
        emit(on_event, "features", done, len(jobs))
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


def ignore_sigint(_worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C to the main process, which saves a checkpoint and stops them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def cached_image_features(
    bundle,
    index,
    ctx: DistContext,
    *,
    image_size: int,
    bf16: bool,
    cache_dir: str | None = None,
    workers: int = 0,
    on_event: EventHook | None = None,
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
    if not any_rank(ctx, feats is None):
        return feats, path, True
    n_jobs = sum(len(m.image_paths) for m in index.models)
    # Fewer renders than ranks (tiny sets only): each rank computes them all rather than hold empty shards.
    shard = (ctx.rank, ctx.world_size) if n_jobs >= ctx.world_size else (0, 1)
    feats = compute_image_features(
        bundle.model.visual, index, ctx.device, image_size=image_size, bf16=bf16, workers=workers,
        on_event=on_event, shard=shard,
    )
    if shard[1] > 1:
        feats = sum_across(ctx, feats)
    if ctx.is_main:
        try:
            save_tensors(path, {"features": feats}, metadata={"model": bundle.model_name, "weights_id": bundle.weights_id})
        except OSError:
            pass  # a read-only cache folder only costs the next run the recomputation
    return feats, path, False
