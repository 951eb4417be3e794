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


def alignment_margin(
    encoder: torch.nn.Module,
    index,
    image_features: torch.Tensor,
    *,
    n_points: int = 1024,
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

    from clip2point.training.pairs import load_points, normalize_sample
    from clip2point.training.pretrain import render_view_pairs
    from clip2point.views import camera_bases

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
