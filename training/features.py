"""Per-view encoder features of dataset samples for adapter training, computed once and cached.

The encoders are frozen and the views fixed, so each sample's per-view features of both paths
([V, D] each) never change during few-shot training: they are rendered and encoded once, saved
as safetensors, and every epoch only runs the adapter. The cache file name is the sha256 of
everything the features depend on: both encoders' weight ids (and their precision, when it is not
fp32: clip2point.models.precision), the model, the sample ids with
their files' sizes and mtimes, n_points, sampling, seed, up axis, views, image size, radius, and
the project, torch and open_clip versions. A corrupt cache file is recomputed.

Samples whose file cannot be read are skipped and listed (`FeatureSet.skipped`), never fatal.

Under torchrun (`ctx`, a `clip2point.distributed.DistContext` with world size W > 1) the samples
are cut into the same batches of `batch_size` a single process encodes, and rank r renders and
encodes batches r, r + W, r + 2W, ... on its own device. Rank 0 gathers them and puts them back in
batch order, so its FeatureSet is the one a single process computes, bit for bit on CPU (each
batch holds the same samples, so the encoders see the same inputs). Only rank 0 reads and writes
the cache: it looks for the file, tells every rank whether it found it, and saves what the ranks
computed together (atomically). The other ranks get None. Every rank must see the same dataset.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from clip2point.distributed import DistContext, broadcast_object, gather_objects, shard
from clip2point.engine.batching import pad_clouds
from clip2point.errors import CheckpointError, DatasetError
from clip2point.evaluate import read_samples

FEATURE_CACHE_VERSION = 1


@dataclass
class FeatureSet:
    """Features of the samples that could be read, in the order of `indices` (dataset indices)."""

    depth: torch.Tensor  # [N, V, D] path 1 (depth encoder), float32 CPU
    clip: torch.Tensor  # [N, V, D] path 2 (CLIP's visual tower)
    targets: torch.Tensor  # [N] int64
    indices: list[int]
    sample_ids: list[str]
    skipped: list[dict] = field(default_factory=list)  # {"id": sample id, "error": message}

    def __len__(self) -> int:
        return len(self.indices)


@dataclass
class RenderSettings:
    """How depth maps are made; part of the cache key."""

    views: int | Sequence[tuple[float, float]]
    image_size: int
    radius: float
    in_channels: int
    render_backend: str = "auto"

    def key(self) -> dict:
        views = self.views if isinstance(self.views, int) else [list(v) for v in self.views]
        return {"views": views, "image_size": self.image_size, "radius": self.radius, "in_channels": self.in_channels}


@torch.inference_mode()
def encode_clouds(
    encoders: Sequence[torch.nn.Module],
    clouds: Sequence[np.ndarray],
    settings: RenderSettings,
    device: torch.device,
) -> list[torch.Tensor]:
    """Render a batch of clouds at the fixed views and run every encoder: one [B, V, D] per encoder."""
    from clip2point.kernels import render_depth
    from clip2point.views import camera_bases

    bases = camera_bases(settings.views, device=device)
    points, lengths = (torch.from_numpy(a) for a in pad_clouds(clouds))
    depth = render_depth(
        points.to(device), bases, lengths=lengths.to(device), image_size=settings.image_size,
        radius=settings.radius, channels=settings.in_channels, backend=settings.render_backend,
    )
    x = depth.flatten(0, 1)
    out = []
    for encoder in encoders:
        f = encoder(x).float()
        out.append(f.reshape(len(clouds), bases.shape[0], -1).cpu())
    return out


def feature_batches(indices: Sequence[int], batch_size: int) -> list[list[int]]:
    """The batches features are computed in (the unit a rank takes under torchrun)."""
    return [list(indices[s : s + batch_size]) for s in range(0, len(indices), batch_size)]


def _encode_batch(dataset, chunk: list[int], encoders, settings: RenderSettings, device: torch.device) -> dict:
    """One batch: {"kept", "targets", "depth", "clip" (None when nothing read), "skipped"}."""
    ok, bad = read_samples(dataset, chunk)
    out: dict = {"kept": [i for i, _, _ in ok], "targets": [t for _, _, t in ok], "depth": None, "clip": None,
                 "skipped": bad}
    if ok:
        out["depth"], out["clip"] = encode_clouds(encoders, [p for _, p, _ in ok], settings, device)
    return out


def compute_features(
    dataset,
    indices: Sequence[int],
    depth_encoder: torch.nn.Module,
    clip_encoder: torch.nn.Module,
    settings: RenderSettings,
    device: torch.device | str = "cpu",
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
    ctx: DistContext | None = None,
) -> FeatureSet | None:
    """Render and encode `dataset[indices]` (both paths). Unreadable samples are skipped and listed.

    Under torchrun (`ctx`) each rank encodes its share of the batches and rank 0 returns the whole
    FeatureSet (the others None); `progress(done, total)` counts this rank's share. When no sample
    can be read every rank raises the same DatasetError.
    """
    ctx = ctx or DistContext()
    device = torch.device(device)
    batches = feature_batches(indices, batch_size)
    mine = [batches[k] for k in shard(len(batches), ctx)]
    total, done = sum(len(b) for b in mine), 0
    parts = []
    for chunk in mine:
        parts.append(_encode_batch(dataset, chunk, [depth_encoder, clip_encoder], settings, device))
        done += len(chunk)
        if progress is not None:
            progress(done, total)
    gathered = gather_objects(ctx, parts)
    feats, error = None, None
    if ctx.is_main:
        # batch k was rank (k mod W)'s (k div W)-th: back into the order one process computes them in
        ordered = [gathered[k % ctx.world_size][k // ctx.world_size] for k in range(len(batches))]
        feats, error = _merge(dataset, ordered, len(indices))
    error = broadcast_object(ctx, error)
    if error is not None:
        raise DatasetError(error)
    return feats


def _merge(dataset, parts: list[dict], total: int) -> tuple[FeatureSet | None, str | None]:
    kept = [i for p in parts for i in p["kept"]]
    skipped = [s for p in parts for s in p["skipped"]]
    if not kept:
        first = skipped[0]["error"] if skipped else "no samples"
        return None, f"{dataset.root}: none of the {total} samples could be read (first error: {first})"
    encoded = [p for p in parts if p["depth"] is not None]
    return FeatureSet(
        depth=torch.cat([p["depth"] for p in encoded]),
        clip=torch.cat([p["clip"] for p in encoded]),
        targets=torch.tensor([t for p in parts for t in p["targets"]], dtype=torch.long),
        indices=kept,
        sample_ids=[dataset.sample_ids[i] for i in kept],
        skipped=skipped,
    ), None


def feature_cache_key(dataset, indices: Sequence[int], encoder_ids: dict, settings: RenderSettings) -> str:
    """sha256 of everything the features of `dataset[indices]` depend on."""
    from importlib.metadata import PackageNotFoundError, version

    from clip2point import __version__

    try:
        open_clip_version = version("open_clip_torch")
    except PackageNotFoundError:
        open_clip_version = "unknown"
    payload = {
        "format": FEATURE_CACHE_VERSION,
        "version": __version__,
        # random ("none") weights and kernels' numerics are only reproducible within these versions
        "torch": torch.__version__,
        "open_clip": open_clip_version,
        "encoders": encoder_ids,
        "render": settings.key(),
        "dataset": {
            "kind": dataset.kind, "n_points": dataset.n_points, "sampling": dataset.sampling,
            "seed": dataset.seed, "up": dataset.up, "labels": list(dataset.labels),
        },
        "samples": [dataset.fingerprint(i) for i in indices],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _load_cached(path: Path, key: str, dataset) -> FeatureSet | None:
    from safetensors import safe_open

    from clip2point.store.checkpoints import load_tensors

    try:
        tensors = load_tensors(path)
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (CheckpointError, OSError, ValueError):
        return None
    if meta.get("key") != key or not {"depth", "clip", "targets", "indices"} <= set(tensors):
        return None
    indices = tensors["indices"].tolist()
    return FeatureSet(
        depth=tensors["depth"], clip=tensors["clip"], targets=tensors["targets"], indices=indices,
        sample_ids=[dataset.sample_ids[i] for i in indices], skipped=json.loads(meta.get("skipped", "[]")),
    )


def cached_features(
    dataset,
    indices: Sequence[int],
    depth_encoder: torch.nn.Module,
    clip_encoder: torch.nn.Module,
    settings: RenderSettings,
    encoder_ids: dict,
    cache_dir: str | Path | None,
    device: torch.device | str = "cpu",
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
    ctx: DistContext | None = None,
) -> tuple[FeatureSet | None, bool]:
    """(features, hit): from `cache_dir` when a file with the same key is there, else computed and saved.

    `cache_dir=None` computes without saving. A cache that cannot be written only costs the next
    run the recomputation. Under torchrun (`ctx`) rank 0 alone looks in and writes to the cache,
    the ranks compute a miss together (see `compute_features`), and only rank 0 gets the features
    (the others (None, hit)).
    """
    from clip2point.store.checkpoints import save_tensors

    ctx = ctx or DistContext()
    path, hit = None, None
    precision = getattr(depth_encoder, "precision", "fp32")  # clip2point.models.precision
    if precision != "fp32":  # bf16 / fp16 features differ from fp32's; fp32 keys stay those of earlier runs
        encoder_ids = {**encoder_ids, "precision": precision}
    if ctx.is_main and cache_dir is not None:
        key = feature_cache_key(dataset, indices, encoder_ids, settings)
        path = Path(cache_dir) / f"{key}.safetensors"
        if path.is_file():
            hit = _load_cached(path, key, dataset)
    if broadcast_object(ctx, hit is not None):
        if progress is not None and ctx.is_main:
            progress(len(indices), len(indices))
        return hit, True
    feats = compute_features(dataset, indices, depth_encoder, clip_encoder, settings, device, batch_size, progress, ctx)
    if path is not None and feats is not None:
        try:
            save_tensors(
                path,
                {"depth": feats.depth, "clip": feats.clip, "targets": feats.targets,
                 "indices": torch.tensor(feats.indices, dtype=torch.long)},
                metadata={"key": key, "skipped": json.dumps(feats.skipped), "dataset": str(dataset.root)},
            )
        except OSError:
            pass
    return feats, False
