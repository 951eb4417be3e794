"""Per-view encoder features of dataset samples for adapter training, computed once and cached.

The encoders are frozen and the views fixed, so each sample's per-view features of both paths
([V, D] each) never change during few-shot training: they are rendered and encoded once, saved
as safetensors, and every epoch only runs the adapter. The cache file name is the sha256 of
everything the features depend on: both encoders' weight ids, the model, the sample ids with
their files' sizes and mtimes, n_points, sampling, seed, up axis, views, image size, radius, and
the project, torch and open_clip versions. A corrupt cache file is recomputed.

Samples whose file cannot be read are skipped and listed (`FeatureSet.skipped`), never fatal.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from clip2point.batching import pad_clouds
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


def compute_features(
    dataset,
    indices: Sequence[int],
    depth_encoder: torch.nn.Module,
    clip_encoder: torch.nn.Module,
    settings: RenderSettings,
    device: torch.device | str = "cpu",
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> FeatureSet:
    """Render and encode `dataset[indices]` (both paths). Unreadable samples are skipped and listed."""
    device = torch.device(device)
    total = len(indices)
    kept: list[int] = []
    targets: list[int] = []
    parts: list[list[torch.Tensor]] = [[], []]
    skipped: list[dict] = []
    done = 0
    for start in range(0, total, batch_size):
        chunk = list(indices[start : start + batch_size])
        ok, bad = read_samples(dataset, chunk)
        skipped += bad
        if ok:
            feats = encode_clouds([depth_encoder, clip_encoder], [p for _, p, _ in ok], settings, device)
            for store, f in zip(parts, feats, strict=True):
                store.append(f)
            kept += [i for i, _, _ in ok]
            targets += [t for _, _, t in ok]
        done += len(chunk)
        if progress is not None:
            progress(done, total)
    if not kept:
        first = skipped[0]["error"] if skipped else "no samples"
        raise DatasetError(f"{dataset.root}: none of the {total} samples could be read (first error: {first})")
    return FeatureSet(
        depth=torch.cat(parts[0]),
        clip=torch.cat(parts[1]),
        targets=torch.tensor(targets, dtype=torch.long),
        indices=kept,
        sample_ids=[dataset.sample_ids[i] for i in kept],
        skipped=skipped,
    )


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

    from clip2point.checkpoints import load_tensors

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
) -> tuple[FeatureSet, bool]:
    """(features, hit): from `cache_dir` when a file with the same key is there, else computed and saved.

    `cache_dir=None` computes without saving. A cache that cannot be written only costs the next
    run the recomputation.
    """
    from clip2point.checkpoints import save_tensors

    if cache_dir is None:
        return compute_features(dataset, indices, depth_encoder, clip_encoder, settings, device, batch_size, progress), False
    key = feature_cache_key(dataset, indices, encoder_ids, settings)
    path = Path(cache_dir) / f"{key}.safetensors"
    if path.is_file():
        hit = _load_cached(path, key, dataset)
        if hit is not None:
            if progress is not None:
                progress(len(indices), len(indices))
            return hit, True
    feats = compute_features(dataset, indices, depth_encoder, clip_encoder, settings, device, batch_size, progress)
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
