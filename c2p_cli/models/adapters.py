"""The few-shot head of CLIP2Point: global-view aggregators, DPA / GDPA fusion, AdapterClassifier.

Two frozen encoders see the same V depth maps: the pre-trained depth encoder (path 1) and CLIP's
own visual tower (path 2). Each path's RAW per-view features [B, V, D] (as the official dpa.py:
`self.adapter1(self.pre_model(imgs))`; runs made before this default recorded
`normalize_views=True` and L2-normalised them first) go through a global-view aggregator (the
paper's "simplified adapter"):

    x = f * w_v                   (learnable per-view weight, initial 0.5)
    x = BatchNorm(x)              (per channel, statistics pooled over batch and views)
    x = Dropout(0.075)(x), flattened to V*D
    h = Linear(V*D -> D) -> BatchNorm(D) -> ReLU -> Dropout(0.075) -> Linear(D -> D)

Fusion of the two path outputs h1, h2 [B, D]:
- "mean" (DPA, the public code):  z = (h1 + h2) / 2
- "gated" (GDPA, our design; the paper's exact gate is not published):
      g = sigmoid(W [h1 ; h2] + b)     per sample and channel, W: [D, 2D], b: [D]
      z = g * h1 + (1 - g) * h2
  W and b start at zero, so g = 0.5 and GDPA starts as exactly DPA; training then learns, per
  channel and per shape, how much to trust the depth-pre-trained path against CLIP's own.
The output is z / |z|, and the adapter's logits are z . t_k over the frozen, L2-normalised text
features t_k of the class prompts, with no scale (the official fewshot.py: `img_feats @
prompt_feats.t()`): training minimises cross-entropy of exactly these. Cosines in [-1, 1] make
near-uniform softmax probabilities, so `AdapterClassifier` reports logits multiplied by a
separate, recorded temperature (`logit_scale`, CLIP's; config.json "probability_scale"): the same
argmax, readable probabilities. `AdapterClassifier.official_logits` gives the unscaled ones.

`AdapterClassifier` wraps both encoders and the head: depth[B, V, C, S, S] -> logits[B, K], the
same interface as `classifier.DepthMapClassifier` (the export boundary). Only `DualPathAdapter`'s
state is trained and saved; the encoders are rebuilt from the run's config.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import option_table
from ..errors import CheckpointError, ModelError, Opt, OptionError, UsageError

FUSIONS = option_table.choices("fusion")
ADAPTER_DROPOUT = 0.075
VIEW_WEIGHT_INIT = 0.5
RUN_FORMAT = "clip2point-fewshot-run"


class ViewAggregator(nn.Module):
    """Global-view aggregator of one path: per-view features [B, V, D] -> one feature [B, D]."""

    def __init__(self, num_views: int, dim: int, dropout: float = ADAPTER_DROPOUT):
        super().__init__()
        self.num_views = int(num_views)
        self.dim = int(dim)
        self.view_weight = nn.Parameter(torch.full((self.num_views,), VIEW_WEIGHT_INIT))
        self.view_norm = nn.BatchNorm1d(self.dim)
        self.fc1 = nn.Linear(self.num_views * self.dim, self.dim)
        self.norm = nn.BatchNorm1d(self.dim)
        self.fc2 = nn.Linear(self.dim, self.dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = feats * self.view_weight.view(1, -1, 1)
        # Batch norm per channel over all (shape, view) pairs: the paper's "BatchNormPoint".
        x = self.view_norm(x.reshape(-1, self.dim)).reshape(-1, self.num_views * self.dim)
        x = self.dropout(x)
        x = self.dropout(F.relu(self.norm(self.fc1(x))))
        return self.fc2(x)


class GatedFusion(nn.Module):
    """z = g * h1 + (1 - g) * h2 with g = sigmoid(W [h1; h2] + b); zero-initialised, so g = 0.5 at start."""

    def __init__(self, dim: int):
        super().__init__()
        self.gate = nn.Linear(2 * dim, dim)
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)

    def forward(self, h1: torch.Tensor, h2: torch.Tensor) -> torch.Tensor:
        g = torch.sigmoid(self.gate(torch.cat([h1, h2], dim=-1)))
        return g * h1 + (1.0 - g) * h2


class MeanFusion(nn.Module):
    """z = (h1 + h2) / 2: the dual-path adapter of the public CLIP2Point code."""

    def forward(self, h1: torch.Tensor, h2: torch.Tensor) -> torch.Tensor:
        return 0.5 * (h1 + h2)


class DualPathAdapter(nn.Module):
    """The trainable head: two aggregators, a fusion and the frozen text classifier.

    forward(f1[B, V, D], f2[B, V, D]) -> logits[B, K] = z . t_k (scale 1, what training sees); f1
    from the depth encoder, f2 from CLIP's visual tower, both raw encoder outputs (L2-normalised
    per view first only with `normalize_views=True`, runs made before the official default). Text
    features and `logit_scale` (the temperature of reported probabilities, not of training) are
    buffers: saved with the weights, never trained.
    """

    def __init__(
        self,
        num_views: int,
        dim: int,
        text_features: torch.Tensor,
        logit_scale: float,
        fusion: str = "gated",
        dropout: float = ADAPTER_DROPOUT,
        normalize_views: bool = False,
    ):
        super().__init__()
        if fusion not in FUSIONS:
            raise OptionError(Opt("fusion"), f" must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        if text_features.ndim != 2 or text_features.shape[1] != dim:
            raise ModelError(
                f"text features of shape {list(text_features.shape)} do not match the visual feature size {dim}"
            )
        self.num_views = int(num_views)
        self.dim = int(dim)
        self.fusion_kind = fusion
        self.normalize_views = bool(normalize_views)
        self.path1 = ViewAggregator(num_views, dim, dropout)
        self.path2 = ViewAggregator(num_views, dim, dropout)
        self.fusion = GatedFusion(dim) if fusion == "gated" else MeanFusion()
        self.register_buffer("text_features", F.normalize(text_features.detach().float(), dim=-1))
        self.register_buffer("logit_scale", torch.tensor(float(logit_scale)))

    @property
    def num_classes(self) -> int:
        return int(self.text_features.shape[0])

    def features(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        """The fused, L2-normalised shape feature [B, D]."""
        f1, f2 = f1.float(), f2.float()
        if self.normalize_views:
            f1, f2 = F.normalize(f1, dim=-1), F.normalize(f2, dim=-1)
        h1 = self.path1(f1)
        h2 = self.path2(f2)
        return F.normalize(self.fusion(h1, h2), dim=-1)

    def forward(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        return self.features(f1, f2) @ self.text_features.t()


class AdapterClassifier(nn.Module):
    """depth[B, V, C, S, S] -> logits[B, K] through both frozen encoders and the adapter.

    Same interface as `classifier.DepthMapClassifier` (attributes `labels`, `in_channels`,
    `num_views`): an export boundary. Keep it in eval mode for inference and export.
    """

    def __init__(self, depth_encoder: nn.Module, clip_encoder: nn.Module, adapter: DualPathAdapter, labels: Sequence[str]):
        super().__init__()
        if depth_encoder.in_channels != clip_encoder.in_channels:
            raise ModelError("both encoders of the adapter must take the same input channels (fold both or neither)")
        if len(labels) != adapter.num_classes:
            raise ModelError(f"{len(labels)} labels for an adapter with {adapter.num_classes} classes")
        self.depth_encoder = depth_encoder.requires_grad_(False)
        self.clip_encoder = clip_encoder.requires_grad_(False)
        self.adapter = adapter
        self.labels = list(labels)
        self.in_channels = int(depth_encoder.in_channels)
        self.num_views = adapter.num_views

    def encode(self, depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-view features of both paths, [B, V, D] each (what the feature cache stores)."""
        x = depth.flatten(0, 1)
        f1 = self.depth_encoder(x).float()
        f2 = self.clip_encoder(x).float()
        return f1.reshape(-1, self.num_views, f1.shape[-1]), f2.reshape(-1, self.num_views, f2.shape[-1])

    def official_logits(self, depth: torch.Tensor) -> torch.Tensor:
        """The head's logits z . t_k without the reporting temperature (the official DPA's output)."""
        f1, f2 = self.encode(depth)
        return self.adapter(f1, f2)

    def forward(self, depth: torch.Tensor) -> torch.Tensor:
        """Reported logits: `official_logits` times the recorded temperature `adapter.logit_scale`."""
        return self.adapter.logit_scale * self.official_logits(depth)


# ---------------------------------------------------------------------------------------------
# The official CLIP2Point few-shot checkpoint (DPA)
# ---------------------------------------------------------------------------------------------

# Their keys, after the "adapter1." / "adapter2." prefix, -> ours in ViewAggregator. Their
# simplified adapter descends from PointCLIP's: `fusion_ratio` (per-view weight) and an
# nn.Sequential `global_f` = [BatchNormPoint (wraps .bn), Dropout, Flatten, Linear, BatchNorm1d,
# ReLU, Dropout, Linear], i.e. parameter indices 0, 3, 4, 7. Alternative spellings seen in
# re-implementations ("view_weight", a Sequential named "adapter") map the same way.
# The real checkpoint file was not available to us: this table is inferred, and tested only
# against state dicts built to that description.
OFFICIAL_ADAPTER_KEYS: tuple[tuple[str, str], ...] = (
    (r"^(?:fusion_ratio|view_weight)$", "view_weight"),
    (r"^(?:global_f|adapter)\.0\.(?:bn\.)?(.+)$", r"view_norm.\1"),
    (r"^(?:global_f|adapter)\.3\.(.+)$", r"fc1.\1"),
    (r"^(?:global_f|adapter)\.4\.(.+)$", r"norm.\1"),
    (r"^(?:global_f|adapter)\.7\.(.+)$", r"fc2.\1"),
)
OFFICIAL_PREFIXES = {"pre_model.": "depth", "ori_model.": "clip", "adapter1.": "path1", "adapter2.": "path2"}
# Wrappers around the visual tower inside pre_model / ori_model.
_VISUAL_WRAPPERS = ("module.", "model.", "visual.")


def _map_adapter_key(key: str) -> str | None:
    for pattern, repl in OFFICIAL_ADAPTER_KEYS:
        if re.match(pattern, key):
            return re.sub(pattern, repl, key)
    return None


def convert_official_fewshot_state(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Split an official few-shot state dict into {"depth", "clip", "path1", "path2"} sub-dicts in our names.

    `depth` / `clip` are visual-tower state dicts (open_clip names, which are OpenAI CLIP's);
    `path1` / `path2` are ViewAggregator state dicts. CheckpointError when a part is missing or an
    adapter key has no mapping.
    """
    parts: dict[str, dict[str, torch.Tensor]] = {name: {} for name in OFFICIAL_PREFIXES.values()}
    for key, value in state.items():
        while key.startswith("module."):
            key = key[len("module."):]
        for prefix, part in OFFICIAL_PREFIXES.items():
            if key.startswith(prefix):
                parts[part][key[len(prefix):]] = value
                break
    for part in ("path1", "path2"):
        mapped = {}
        for key, value in parts[part].items():
            ours = _map_adapter_key(key)
            if ours is None:
                raise CheckpointError(f"official few-shot checkpoint: no mapping for adapter key {key!r}")
            mapped[ours] = value.reshape(-1) if ours == "view_weight" else value
        parts[part] = mapped
    for part in ("depth", "clip"):
        sub = parts[part]
        for wrapper in _VISUAL_WRAPPERS:
            if sub and all(k.startswith(wrapper) for k in sub):
                sub = {k[len(wrapper):]: v for k, v in sub.items()}
        # A whole CLIP model saved as pre_model / ori_model: only its visual tower is used.
        visual = {k[len("visual."):]: v for k, v in sub.items() if k.startswith("visual.")}
        parts[part] = visual or sub
    missing = [prefix for prefix, part in OFFICIAL_PREFIXES.items() if not parts[part]]
    if missing:
        raise CheckpointError(f"official few-shot checkpoint: no {', '.join(p + '*' for p in missing)} entries")
    return parts


def load_official_fewshot(
    path: str | Path,
    bundle,
    labels: Sequence[str],
    templates: Sequence[str] | None = None,
    fold: bool = True,
) -> AdapterClassifier:
    """An AdapterClassifier (mean fusion) from CLIP2Point's few-shot checkpoint, loaded weights_only.

    `bundle` must be the CLIP the checkpoint was trained from (ViT-B-32, openai); its text tower
    encodes the prompts of `labels` (default template: the official `image of a {}`). The forward
    is the official DPA's: raw per-view features into both aggregators, their mean L2-normalised,
    dotted with the text features (`official_logits`; `forward` adds the reporting temperature).
    """
    from clip2point.store.checkpoints import load_state_dict_file

    from . import encoders, prompts

    parts = convert_official_fewshot_state(load_state_dict_file(path))
    depth = encoders.build_depth_encoder(bundle, fold=fold)
    clip = encoders.clip_visual_encoder(bundle, fold=fold)
    for name, encoder in (("pre_model", depth), ("ori_model", clip)):
        try:
            encoder.visual.load_state_dict(parts["depth" if name == "pre_model" else "clip"], strict=True)
        except RuntimeError as e:
            raise ModelError(f"{path}: {name} weights do not fit {bundle.model_name}'s visual tower ({str(e).splitlines()[0]})") from e
    num_views = int(parts["path1"]["view_weight"].numel())
    text = prompts.text_features(bundle, labels, templates or prompts.DEFAULT_TEMPLATES).cpu()
    adapter = DualPathAdapter(num_views, depth.output_dim or text.shape[1], text, _logit_scale(bundle), "mean",
                              normalize_views=False)
    for name in ("path1", "path2"):
        try:
            getattr(adapter, name).load_state_dict(parts[name], strict=True)
        except RuntimeError as e:
            raise ModelError(f"{path}: adapter {name} does not fit ({str(e).splitlines()[0]})") from e
    return AdapterClassifier(depth, clip, adapter, labels).eval()


def _logit_scale(bundle) -> float:
    from .classifier import logit_scale_of

    return logit_scale_of(bundle.model)


# ---------------------------------------------------------------------------------------------
# Run folders -> classifiers
# ---------------------------------------------------------------------------------------------


def build_adapter_classifier(
    bundle,
    labels: Sequence[str],
    text_features: torch.Tensor,
    num_views: int,
    fusion: str,
    depth_encoder: str | Path | None = None,
    fold: bool = True,
    dropout: float = ADAPTER_DROPOUT,
    normalize_views: bool = False,
) -> AdapterClassifier:
    """Both frozen encoders plus a freshly initialised DualPathAdapter (seed the caller's RNG first)."""
    from . import encoders

    depth = encoders.build_depth_encoder(bundle, weights=depth_encoder, fold=fold)
    clip = encoders.clip_visual_encoder(bundle, fold=fold)
    dim = depth.output_dim or int(text_features.shape[1])
    adapter = DualPathAdapter(num_views, dim, text_features.cpu(), _logit_scale(bundle), fusion, dropout, normalize_views)
    return AdapterClassifier(depth, clip, adapter, labels)


def read_run_config(run: str | Path) -> dict:
    """The config.json of a few-shot run folder, every field checked (`clip2point.store.run_files`);
    CheckpointError when it is not one, RunFileError naming the field that is wrong."""
    from clip2point.store.checkpoints import read_json

    from ..store.run_files import check_fewshot_config

    run = Path(run)
    if not run.is_dir():
        raise CheckpointError(f"{run}: not a few-shot run folder (no such folder)")
    cfg = read_json(run / "config.json")
    if not isinstance(cfg, dict) or cfg.get("format") != RUN_FORMAT:
        found = cfg.get("format") if isinstance(cfg, dict) else type(cfg).__name__
        raise CheckpointError(f"{run / 'config.json'}: not a c2p fewshot run config (format {found!r})")
    return check_fewshot_config(cfg, run / "config.json")


def check_encoder_identity(cfg: dict, bundle) -> None:
    """CheckpointError when the CLIP weights or the depth-encoder file differ from those the run trained with."""
    from .encoders import sha256_file

    if bundle.weights_id != cfg["weights_id"]:
        raise CheckpointError(
            f"the run was trained on CLIP weights {cfg['weights_id']}, but {bundle.weights_id} were loaded"
        )
    path = cfg.get("depth_encoder")
    if path:
        if not Path(path).is_file():
            raise CheckpointError(f"{path}: the run's depth encoder is missing (it is needed to rebuild the adapter)")
        sha = sha256_file(path)
        if sha != cfg.get("depth_encoder_sha256"):
            raise CheckpointError(f"{path}: depth encoder changed since training (sha256 {sha[:12]} != {cfg.get('depth_encoder_sha256', '?')[:12]})")


def run_read_settings(cfg: dict) -> dict:
    """How the run read its point clouds (config.json "dataset"): {"n_points", "sampling", "up"}.

    The adapter learned features of clouds prepared this way, so classifying or evaluating with it
    should read files the same way.
    """
    from .. import defaults

    ds = cfg.get("dataset") or {}
    return {"n_points": int(ds.get("n_points", defaults.NUM_POINTS)), "sampling": ds.get("sampling"), "up": ds.get("up")}


def load_run_adapter(run: str | Path, which: str = "best", device: str | torch.device = "cpu") -> AdapterClassifier:
    """The AdapterClassifier of a run folder (eval mode): encoders from its config, adapter from `which`.safetensors."""
    from clip2point.store.checkpoints import load_tensors

    from ..store.run_files import blamed_on, check_adapter_state
    from .encoders import load_clip

    if which not in ("best", "last"):
        raise UsageError(f"which must be best or last, got {which!r}")
    run = Path(run)
    cfg = read_run_config(run)
    state = load_tensors(run / f"{which}.safetensors")
    check_adapter_state(state, run / f"{which}.safetensors", cfg)
    with blamed_on(run / "config.json", ModelError):  # its model / pretrained name the CLIP to load
        bundle = load_clip(cfg["model"], cfg["pretrained"], device="cpu")
    check_encoder_identity(cfg, bundle)
    clf = build_adapter_classifier(
        bundle, cfg["labels"], state["text_features"], cfg["num_views"], cfg["fusion"],
        cfg.get("depth_encoder"), cfg.get("fold", True), cfg.get("dropout", ADAPTER_DROPOUT),
        cfg.get("normalize_views", True),
    )
    try:
        clf.adapter.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{run / (which + '.safetensors')}: does not fit the run's adapter ({str(e).splitlines()[0]})") from e
    return clf.to(device).eval()


def load_adapter_classifier(
    run: str | Path,
    device: str = "auto",
    which: str = "best",
    render_backend: str = "auto",
    labels: Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
    model: str = "ViT-B-32",
    pretrained: str = "openai",
):
    """A `classifier.PointCloudClassifier` around a trained adapter, for `c2p classify / eval --adapter`.

    `run` is a `c2p fewshot` run folder (everything comes from its config.json and
    `which`.safetensors), or an official CLIP2Point few-shot checkpoint file (mean fusion, 10 views;
    then `labels` default to ModelNet40 and `model` / `pretrained` name the CLIP it was trained on).
    """
    from .. import defaults
    from ..distributed import resolve_device
    from . import prompts
    from .classifier import PointCloudClassifier
    from .encoders import load_clip

    dev = resolve_device(device)
    run = Path(run)
    if run.is_file():
        bundle = load_clip(model, pretrained, device="cpu")
        names = list(labels) if labels else list(prompts.MODELNET40)
        head = load_official_fewshot(run, bundle, names, templates).to(dev).eval()
        meta = {"adapter": str(run), "adapter_format": "clip2point-official", "model": bundle.model_name,
                "weights": bundle.weights_id, "fusion": "mean", "views": head.num_views,
                "normalize_views": head.adapter.normalize_views,
                "probability_scale": float(head.adapter.logit_scale)}
        return PointCloudClassifier(
            head, names, head.num_views, in_channels=head.in_channels, device=dev,
            image_size=defaults.IMAGE_SIZE, radius=defaults.POINT_RADIUS, render_backend=render_backend, meta=meta,
        )
    head = load_run_adapter(run, which, dev)
    cfg = read_run_config(run)
    meta = {"adapter": str(run), "which": which, "model": cfg["model"], "weights": cfg["weights_id"],
            "depth_encoder": cfg.get("depth_encoder"), "fusion": cfg["fusion"], "views": cfg["num_views"],
            "templates": cfg.get("templates"), "read": run_read_settings(cfg),
            "probability_scale": float(head.adapter.logit_scale)}
    selection = cfg.get("selection") or {}
    if selection.get("note") and which == "best":
        # The paper's protocol picked this epoch on the test split: every report of it says so.
        meta["selection"] = selection
    return PointCloudClassifier(
        head, cfg["labels"], cfg["num_views"], in_channels=head.in_channels, device=dev,
        image_size=cfg.get("image_size", defaults.IMAGE_SIZE), radius=cfg.get("radius", defaults.POINT_RADIUS),
        render_backend=render_backend, meta=meta,
    )
