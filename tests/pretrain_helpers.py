"""Shared by the pre-training tests: small synthetic pairs sets and a tiny CLIP with spread image features."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

TINY = "c2p-tiny"


@contextlib.contextmanager
def one_thread():
    """Run torch on one thread: with several test processes sharing 2 cores, OpenMP spinning makes
    the tiny model 50x slower on 2 threads than on one."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def make_pairs(out: Path, classes: list[str], per_class: int, n_points: int = 2048, seed: int = 0) -> Path:
    from clip2point.training.pairs import synth_sources, write_pairs

    meta = write_pairs(synth_sources(classes, per_class, seed), out, n_points=n_points, seed=seed)
    assert len(meta["models"]) == len(classes) * per_class and not meta["skipped"]
    return out


def spread_tiny_clip(pairs: Path, out: Path, shrink: float = 0.8) -> Path:
    """A c2p-tiny CLIP state dict whose image features are spread like a trained CLIP's.

    A randomly initialised ViT maps every render to almost the same feature (mean cosine 0.97
    between different renders here: uniform attention averages mostly-white patches), which no
    alignment could tell apart. Shrinking the common direction u of the render features by
    `shrink` in the output projection (proj <- proj (I - shrink u u^T)) leaves a mean cosine of
    about 0.6, the regime of real CLIP features, without touching anything else. The depth encoder
    starts from the same weights, as in the method.
    """
    import torch.nn.functional as F

    from clip2point.models.encoders import load_clip
    from clip2point.store.checkpoints import save_tensors
    from clip2point.training.pairs import image_to_tensor, load_image, open_pairs

    index = open_pairs(pairs)
    images = torch.stack([image_to_tensor(load_image(p)) for m in index.models for p in m.image_paths])
    model = load_clip(TINY, "none").model
    visual = model.visual
    with torch.no_grad():
        u = F.normalize(visual(images).mean(0), dim=0)
        visual.proj.copy_(visual.proj @ (torch.eye(len(u)) - shrink * torch.outer(u, u)))
    save_tensors(out, model.state_dict())
    return out
