"""Train `c2p-demo`: a small CLIP that really classifies the 13 `c2p synth` shape classes.

It exists so that a newcomer without network access sees a classifier that classifies (`make
demo`) and so that tests can check answers, not only shapes. It is NOT CLIP: it has seen nothing
but depth maps of 13 procedural shapes and is useless for real objects.

What it is trained on is exactly what inference feeds the model:
- clouds of `clip2point.synth` shapes (all 13 classes) in synth's random poses, proportions and
  scales, as scans (surface samples with noise and a missing cap) or as clean mesh-surface samples
  (what `io.read_cloud` makes of an .off / .obj / .stl), a quarter of them tilted further (up to
  35 degrees) and some made sparse; then subsampled, centred and scaled into the unit sphere and
  turned y-up like `io.read_cloud(up="z")` does;
- rendered by the project's own renderer (`clip2point.kernels.render_depth` with
  `clip2point.views.camera_bases`) in the paper's 6 zero-shot views or its 10 few-shot views, as
  1-channel maps normalised per map;
- encoded by the visual tower with its folded 1-channel stem (`encoders.fold_first_conv`, the
  default at inference), so training sees the same input tensors as `c2p classify`; the per-view
  features are normalised and averaged over the views as `classifier.DepthMapClassifier` does.

Architecture (c2p_cli/model_configs/c2p-demo.json): open_clip's ModifiedResNet, width 8, one
bottleneck per stage, attention pooling to 128-d, 224 px input; a 3-layer, 128-wide text
transformer over open_clip's bundled tokenizer (context 32). A ViT of the same cost (patch 32,
width 128, 4 layers) was tried first: it was still at chance after 100 steps, where this ResNet
already learns; on this budget the convolutions' bias wins.

Objective: CLIP's symmetric image-text cross-entropy. A step holds `groups` groups of one shape
per class; within a group the 13 shapes and their 13 prompts are the batch of a CLIP loss (no two
pairs share a class, so no false negatives), plus an image-to-text term per single view. Each
prompt is one of TEMPLATES, which include the default template in both spellings ("image of a {}."
and the official "image of a {}").

The text tower's token embedding table (49408 x width) would make the file 25 MB; only the rows
of the tokens in TEMPLATES x classes are trained, every other row is zero from the start (it never
gets a gradient and is kept out of weight decay, so it stays zero), and the file stores the trained
rows only (`token_embedding.weight.rows` / `.values`, expanded by `encoders.load_clip`). Weights are
stored in float16. The file's metadata records the render settings hash
(`clip2point.models.render_version`), a pooled render of a fixed probe cloud, the training options, times
and the validation accuracy.

    python -m tools.train_demo_model --out c2p_cli/weights/c2p-demo.safetensors   # make demo-model
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from clip2point import synth
from clip2point.io import normalize_unit_sphere, sample_surface, subsample
from clip2point.views import apply_up_axis, camera_bases

MODEL_NAME = "c2p-demo"
CLASSES: tuple[str, ...] = synth.SHAPES
# Both spellings of the default template (the paper's "image of a {}." and the official code's
# "image of a {}"), then a few others so that other prompts give sensible features too.
TEMPLATES: tuple[str, ...] = (
    "image of a {}.",
    "image of a {}",
    "a depth map of a {}.",
    "a photo of a {}.",
    "a rendering of a {}.",
    "a 3d model of a {}.",
    "a point cloud of a {}.",
    "a {}.",
    "a {}",
    "{}",
)
# Seeds of the validation set written into the weights' metadata (synth's test split); the tests
# use yet another seed (tests/models/test_demo_model.py). Training draws its shapes from generators keyed
# by TRAIN_STREAM, which synth's sample_rng (keyed by [seed, split, crc32(class), index]) never makes.
VAL_SEED = 1234
TRAIN_STREAM = 0xDE30
META_KEY = "clip2point"
WEIGHTS_FORMAT = "clip2point-clip-sparse-embedding"
EMBEDDING_KEY = "token_embedding.weight"


@dataclass
class DemoTrainOptions:
    seed: int = 0
    steps: int = 2000
    groups: int = 2  # shapes per class per step: a step sees groups x 13 shapes
    lr: float = 1.5e-3
    weight_decay: float = 0.05
    warmup_steps: int = 30
    # Random text features are distinct but the image features of an untrained tower are all alike:
    # trained together from the start, the text tower first maps every prompt to that one feature
    # and both towers then sit at chance for hundreds of steps. Keeping the text tower fixed for
    # the first steps lets the images learn to tell the random prompt features apart first.
    text_frozen_steps: int = 30
    view_loss_weight: float = 0.5  # the per-view image-to-text term
    ten_view_fraction: float = 0.5  # steps rendered in the 10 few-shot views (else the 6 zero-shot ones)
    views_per_step: int = 3  # views of the step's preset drawn for the step (more shapes for the same compute)
    mesh_fraction: float = 0.35  # clean mesh-surface samples (else scan-like clouds)
    extra_tilt_fraction: float = 0.25
    max_extra_tilt_deg: float = 35.0
    sparse_fraction: float = 0.15  # clouds of 300 to 1023 points
    n_points: int = 1024
    val_per_class: int = 30
    threads: int | None = None


# ---------------------------------------------------------------------------------------------
# Data: the same clouds and depth maps as inference
# ---------------------------------------------------------------------------------------------


def _tilt(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """A rotation about a random horizontal axis (z-up frame) by up to `max_deg` degrees."""
    phi = rng.uniform(0.0, 2.0 * math.pi)
    return synth._rot_axis(np.array([math.cos(phi), math.sin(phi), 0.0]), math.radians(rng.uniform(0.0, max_deg)))


def prepare_cloud(points: np.ndarray, n_points: int, rng: np.random.Generator) -> np.ndarray:
    """What `io.read_cloud(up="z")` does to a file's points: subsample, unit sphere, z-up -> y-up."""
    pts = subsample(np.asarray(points, dtype=np.float64), n_points, "random", rng)
    return apply_up_axis(normalize_unit_sphere(pts), "z")


def training_cloud(name: str, rng: np.random.Generator, opts: DemoTrainOptions) -> np.ndarray:
    """One augmented cloud of class `name`, float32 [n, 3], normalised and y-up, ready to render."""
    if rng.random() < opts.mesh_fraction:
        v, f = synth.random_mesh(name, rng)
        pts = sample_surface(v, f, opts.n_points, rng, dtype=np.float64)
    else:
        pts = synth.random_cloud(name, rng, 2 * opts.n_points).astype(np.float64)
    if rng.random() < opts.extra_tilt_fraction:
        pts = pts @ _tilt(rng, opts.max_extra_tilt_deg).T
    n = opts.n_points
    if rng.random() < opts.sparse_fraction:
        n = int(rng.integers(300, opts.n_points))
    return prepare_cloud(pts, n, rng)


def render_clouds(clouds: Sequence[np.ndarray], bases: torch.Tensor) -> torch.Tensor:
    """[B, V, 1, S, S] depth maps of ragged clouds: the renderer call `PointCloudClassifier.render` makes."""
    from clip2point.engine.batching import pad_clouds
    from clip2point.kernels import render_depth

    points, lengths = pad_clouds(list(clouds))
    return render_depth(torch.from_numpy(points), bases, lengths=torch.from_numpy(lengths), channels=1)


def probe_cloud() -> np.ndarray:
    """A fixed, asymmetric cloud (no RNG: the same on every machine) for the render fingerprint."""
    t = np.linspace(0.0, 1.0, 1500)
    helix = np.stack([np.cos(6 * math.pi * t) * (0.3 + 0.5 * t), np.sin(6 * math.pi * t) * 0.6, 1.6 * t - 0.8], 1)
    bar = np.stack([np.linspace(0.2, 0.9, 300), np.full(300, -0.5), np.full(300, 0.7)], 1)
    return np.concatenate([helix, bar]).astype(np.float32)


def render_probe() -> dict[str, list[float]]:
    """The probe rendered in the 6 and 10 views, average-pooled to 7 x 7 per map, rounded.

    Stored in the weights' metadata: a renderer change that the settings hash misses (a new
    splat rule, culling, normalisation) still changes these numbers.
    """
    cloud = probe_cloud()
    out = {}
    for n in (6, 10):
        maps = render_clouds([cloud], camera_bases(n))[0, :, 0]
        pooled = F.avg_pool2d(maps[:, None], 32)[:, 0]
        out[str(n)] = [round(float(x), 4) for x in pooled.flatten()]
    return out


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


def prompt_texts(classes: Sequence[str] = CLASSES, templates: Sequence[str] = TEMPLATES) -> list[str]:
    from clip2point.models.prompts import readable_name

    return [t.format(readable_name(c)) for c in classes for t in templates]


def used_token_ids(tokenizer, texts: Sequence[str]) -> torch.Tensor:
    """Sorted ids of every token in `texts` (start, end and padding included)."""
    ids = torch.unique(tokenizer(list(texts)).flatten())
    return torch.unique(torch.cat([ids, torch.tensor([0])]))


def create_model(seed: int):
    """A randomly initialised c2p-demo CLIP with a folded stem and a zeroed, partly trainable embedding."""
    import open_clip

    from clip2point.models.encoders import fold_first_conv, register_model_configs

    register_model_configs()
    torch.manual_seed(seed)
    model = open_clip.create_model(MODEL_NAME, pretrained=None, device="cpu")
    tokenizer = open_clip.get_tokenizer(MODEL_NAME)
    keep = used_token_ids(tokenizer, prompt_texts())
    with torch.no_grad():
        mask = torch.ones(model.token_embedding.weight.shape[0], dtype=torch.bool)
        mask[keep] = False
        model.token_embedding.weight[mask] = 0.0
    fold_first_conv(model.visual)
    return model, tokenizer


def _param_groups(model, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only; never on the token embedding (its unused rows must stay 0)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or name.startswith("token_embedding") or "positional_embedding" in name or name.endswith("class_embedding"):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def shape_features(model, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(shape features [B, D], view features [B, V, D]) as `DepthMapClassifier` computes them."""
    batch, views = maps.shape[:2]
    f = F.normalize(model.visual(maps.flatten(0, 1)).float(), dim=-1).view(batch, views, -1)
    return F.normalize(f.mean(1), dim=-1), f


def clip_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric cross-entropy over groups: image, text [G, K, D] -> mean over the G groups."""
    logits = scale * image @ text.transpose(1, 2)  # [G, K, K]
    target = torch.arange(image.shape[1]).expand(image.shape[0], -1)
    return (F.cross_entropy(logits.flatten(0, 1), target.flatten()) + F.cross_entropy(logits.transpose(1, 2).flatten(0, 1), target.flatten())) / 2


def _lr_factor(step: int, opts: DemoTrainOptions) -> float:
    if step < opts.warmup_steps:
        return (step + 1) / opts.warmup_steps
    progress = (step - opts.warmup_steps) / max(1, opts.steps - opts.warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def train(opts: DemoTrainOptions, log: Callable[[str], None] = print):
    """The trained model (folded stem, float32) and a summary of the run."""
    from clip2point.models.prompts import readable_name

    if opts.threads:
        torch.set_num_threads(opts.threads)
    model, tokenizer = create_model(opts.seed)
    model.train()
    # A layout change only (same values): oneDNN's convolutions with few channels run about 1.5x
    # faster on CPU in channels-last.
    model.visual.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(_param_groups(model, opts.weight_decay), lr=opts.lr, betas=(0.9, 0.98), eps=1e-6)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, opts))
    bases = {n: camera_bases(n) for n in (6, 10)}
    k = len(CLASSES)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    render_s = 0.0
    for step in range(opts.steps):
        rng = np.random.default_rng([TRAIN_STREAM, opts.seed, step])
        preset = 10 if rng.random() < opts.ten_view_fraction else 6
        chosen = np.sort(rng.choice(preset, size=min(opts.views_per_step, preset), replace=False))
        step_bases = bases[preset][torch.from_numpy(chosen)]
        views = len(chosen)
        clouds, texts = [], []
        for g in range(opts.groups):
            for c, name in enumerate(CLASSES):
                clouds.append(training_cloud(name, np.random.default_rng([TRAIN_STREAM, opts.seed, step, g, c]), opts))
                template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
                texts.append(template.format(readable_name(name)))
        t0 = time.perf_counter()
        with torch.no_grad():
            maps = render_clouds(clouds, step_bases)
        render_s += time.perf_counter() - t0
        shape, per_view = shape_features(model, maps)
        with torch.set_grad_enabled(step >= opts.text_frozen_steps):
            text = F.normalize(model.encode_text(tokenizer(texts)).float(), dim=-1)
        scale = model.logit_scale.exp().clamp(max=100.0)
        shape, text = shape.view(opts.groups, k, -1), text.view(opts.groups, k, -1)
        loss = clip_loss(shape, text, scale)
        view_logits = scale * torch.einsum("gkvd,gjd->gkvj", per_view.view(opts.groups, k, views, -1), text)
        view_target = torch.arange(k)[None, :, None].expand(opts.groups, k, views)
        loss = loss + opts.view_loss_weight * F.cross_entropy(view_logits.reshape(-1, k), view_target.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100.0))
        if step % 25 == 0 or step == opts.steps - 1:
            acc = (scale * shape @ text.transpose(1, 2)).argmax(-1).eq(torch.arange(k)).float().mean().item()
            log(
                f"step {step + 1}/{opts.steps}  loss {loss.item():.3f}  batch acc {acc:.2f}  "
                f"scale {scale.item():.1f}  lr {sched.get_last_lr()[0]:.2e}  "
                f"{time.perf_counter() - wall0:.0f} s wall, {time.process_time() - cpu0:.0f} s CPU"
            )
    summary = {
        "train_wall_s": round(time.perf_counter() - wall0, 1),
        "train_cpu_s": round(time.process_time() - cpu0, 1),
        "render_wall_s": round(render_s, 1),
        "threads": torch.get_num_threads(),
    }
    model.visual.to(memory_format=torch.contiguous_format)
    return model.eval(), summary


# ---------------------------------------------------------------------------------------------
# Weights file
# ---------------------------------------------------------------------------------------------


def compact_state(model) -> dict[str, torch.Tensor]:
    """The CLIP state dict (unfolded keys) in float16, with only the non-zero embedding rows."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    table = state.pop(EMBEDDING_KEY)
    rows = torch.nonzero(table.abs().sum(1) > 0).flatten()
    state[EMBEDDING_KEY + ".rows"] = rows.to(torch.int64)
    state[EMBEDDING_KEY + ".values"] = table[rows]
    return {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}


def save_weights(model, path: str | Path, meta: dict) -> None:
    from clip2point.store.checkpoints import save_tensors

    info = {"format": WEIGHTS_FORMAT, "model": MODEL_NAME, **meta}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_tensors(path, compact_state(model), metadata={META_KEY: json.dumps(info, sort_keys=True)})


def validation_clouds(seed: int = VAL_SEED, per_class: int = 30, n_points: int = 1024) -> tuple[list[np.ndarray], list[int]]:
    """The test split of `c2p synth --seed SEED` (in memory), read as `c2p classify` reads its files."""
    clouds, targets = [], []
    for c, name in enumerate(CLASSES):
        for i in range(per_class):
            rng = synth.sample_rng(seed, "test", name, i)
            pts = synth.random_cloud(name, rng, 2048)
            clouds.append(prepare_cloud(pts, n_points, np.random.default_rng(0)))
            targets.append(c)
    return clouds, targets


def evaluate_weights(path: str | Path, clouds: Sequence[np.ndarray], targets: Sequence[int], views: int = 6,
                     templates: Sequence[str] | None = None, batch_size: int = 64) -> dict:
    """Zero-shot top-1 (overall and per class) of the weights file through `load_classifier`."""
    from clip2point.models.classifier import load_classifier

    clf = load_classifier(labels=list(CLASSES), model=MODEL_NAME, pretrained=str(path), views=views,
                          templates=templates, device="cpu", render_backend="torch")
    preds = []
    for start in range(0, len(clouds), batch_size):
        preds += clf.logits(list(clouds[start:start + batch_size])).argmax(-1).tolist()
    preds_t, targets_t = torch.tensor(preds), torch.tensor(list(targets))
    per_class = {name: round(float((preds_t[targets_t == c] == c).float().mean()), 4) for c, name in enumerate(CLASSES)}
    return {"top1": round(float((preds_t == targets_t).float().mean()), 4), "per_class": per_class}


def main(argv: Sequence[str] | None = None) -> int:
    from clip2point import __version__
    from clip2point.models.prompts import DEFAULT_TEMPLATES
    from clip2point.models.render_version import RENDER_VERSION, render_settings_hash

    defaults_ = DemoTrainOptions()
    parser = argparse.ArgumentParser(description="Train the c2p-demo model on synthetic shapes (see the module docstring).")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "c2p_cli" / "weights" / "c2p-demo.safetensors")
    parser.add_argument("--seed", type=int, default=defaults_.seed)
    parser.add_argument("--steps", type=int, default=defaults_.steps)
    parser.add_argument("--groups", type=int, default=defaults_.groups)
    parser.add_argument("--lr", type=float, default=defaults_.lr)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--val-per-class", type=int, default=defaults_.val_per_class)
    args = parser.parse_args(argv)
    opts = DemoTrainOptions(seed=args.seed, steps=args.steps, groups=args.groups, lr=args.lr, threads=args.threads,
                            val_per_class=args.val_per_class)

    wall0, cpu0 = time.perf_counter(), time.process_time()
    model, summary = train(opts, log=lambda s: print(s, flush=True))
    meta = {
        "render_settings_hash": render_settings_hash(),
        "render_version": RENDER_VERSION,
        "render_probe": render_probe(),
        "classes": list(CLASSES),
        "templates": list(TEMPLATES),
        "options": asdict(opts),
        "c2p_version": __version__,
        "torch": torch.__version__,
        **summary,
    }
    save_weights(model, args.out, meta)
    clouds, targets = validation_clouds(VAL_SEED, opts.val_per_class, opts.n_points)
    val = {"seed": VAL_SEED, "per_class_count": opts.val_per_class}
    for tag, templates, views in (("default", None, 6), ("no_period", ["image of a {}"], 6), ("views10", None, 10)):
        val[tag] = evaluate_weights(args.out, clouds, targets, views=views, templates=templates)
    meta["validation"] = val
    meta["total_wall_s"] = round(time.perf_counter() - wall0, 1)
    meta["total_cpu_s"] = round(time.process_time() - cpu0, 1)
    save_weights(model, args.out, meta)  # again, with the validation figures in the metadata
    print(json.dumps({k: meta[k] for k in ("validation", "train_wall_s", "train_cpu_s", "total_wall_s", "total_cpu_s")}, indent=1))
    print(f"default template: {DEFAULT_TEMPLATES[0]!r}; wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
