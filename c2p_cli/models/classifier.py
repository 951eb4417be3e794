"""Zero-shot classification: depth maps -> logits (the export boundary) and points -> logits.

`DepthMapClassifier` is what gets exported to ONNX / TensorRT: it holds no Python control flow
that depends on data, and reshapes with the fixed number of views so the batch stays dynamic.
`PointCloudClassifier` adds the renderer in front of any head (torch module or an exported-graph
runner), pads ragged batches, and records what the results were made with (`meta`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import defaults
from ..errors import UsageError

MAX_LOGIT_SCALE = 100.0


class DepthMapClassifier(nn.Module):
    """depth[B, V, C, S, S] -> logits[B, K] = logit_scale * mean_v cos(f_v, t_k).

    The paper sums the per-view cosines; the mean has the same argmax and keeps CLIP's logit scale
    meaningful for softmax probabilities. Since the text features are fixed, the mean of the
    normalised view features is taken first and compared once (same value, V times fewer products).
    """

    def __init__(
        self,
        encoder: nn.Module,
        text_features: torch.Tensor,
        logit_scale: float,
        labels: Sequence[str],
        num_views: int,
    ):
        super().__init__()
        if text_features.ndim != 2 or text_features.shape[0] != len(labels):
            raise UsageError(
                f"text features {tuple(text_features.shape)} do not match {len(labels)} labels"
            )
        self.encoder = encoder
        self.register_buffer("text_features", F.normalize(text_features.detach().float(), dim=-1))
        self.logit_scale = float(logit_scale)
        self.labels = list(labels)
        self.num_views = int(num_views)
        self.in_channels = int(getattr(encoder, "in_channels", 3))

    def view_features(self, depth: torch.Tensor) -> torch.Tensor:
        """[B, V, D] L2-normalised features of each view."""
        features = self.encoder(depth.flatten(0, 1))
        features = F.normalize(features.float(), dim=-1)
        return features.reshape(-1, self.num_views, features.shape[-1])

    def forward(self, depth: torch.Tensor) -> torch.Tensor:
        pooled = self.view_features(depth).mean(dim=1)
        return self.logit_scale * pooled @ self.text_features.t()

    def official_logits(self, depth: torch.Tensor) -> torch.Tensor:
        """The official zeroshot.py's logits: sum_v cos(f_v, t_k) (= forward * V / logit_scale)."""
        return self.view_features(depth).sum(dim=1) @ self.text_features.t()


def _as_batch(
    points: Any, lengths: Any, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(points [B, N, 3] float32 on device, lengths [B] or None) from a tensor / array / list of clouds."""
    if isinstance(points, (list, tuple)):
        if not points:
            raise UsageError("no point clouds to classify")
        from ..engine.batching import pad_clouds

        clouds = [c.detach().cpu().numpy() if torch.is_tensor(c) else np.asarray(c) for c in points]
        for i, array in enumerate(clouds):
            if array.ndim != 2 or array.shape[1] != 3:
                raise UsageError(f"point cloud {i} has shape {tuple(array.shape)}, expected [n, 3]")
        batch, sizes = pad_clouds(clouds)
        if lengths is None:
            lengths = sizes
        points = torch.from_numpy(batch)
    points = torch.as_tensor(points)
    if points.ndim == 2:
        points = points.unsqueeze(0)
    if points.ndim != 3 or points.shape[-1] != 3:
        raise UsageError(f"points must be [B, N, 3] (or a list of [n, 3] clouds), got {tuple(points.shape)}")
    points = points.to(device=device, dtype=torch.float32)
    if lengths is not None:
        lengths = torch.as_tensor(lengths, dtype=torch.long).to(device)
    return points, lengths


class PointCloudClassifier:
    """points -> depth maps (clip2point.kernels.render_depth) -> head -> logits / probabilities.

    `head` is any callable depth[B, V, C, S, S] -> logits[B, K]: a DepthMapClassifier, an
    AdapterClassifier, or a runner of an exported graph. `meta` records the model, weights, views,
    prompts and rendering settings so that outputs can say what made them. `precision` (fp32, bf16,
    fp16, auto: clip2point.models.precision) is applied to the head's encoders once, here; the
    projection stays float32 and `precision` says what was chosen.
    """

    def __init__(
        self,
        head: Callable[[torch.Tensor], Any],
        labels: Sequence[str],
        views,
        *,
        in_channels: int,
        device,
        image_size: int = defaults.IMAGE_SIZE,
        radius: float = defaults.POINT_RADIUS,
        render_backend: str = "auto",
        meta: dict | None = None,
        precision: str | None = "fp32",
    ):
        from ..views import camera_bases

        self.head = head
        self.labels = list(labels)
        self.views = views
        self.in_channels = int(in_channels)
        self.device = torch.device(device)
        self.image_size = int(image_size)
        self.radius = float(radius)
        self.render_backend = render_backend
        self.bases = camera_bases(views, device=self.device)
        self.meta = dict(meta or {})
        self.precision = "fp32"
        if precision not in (None, "fp32"):
            from .precision import apply_precision

            apply_precision(self, precision)

    @property
    def num_views(self) -> int:
        return int(self.bases.shape[0])

    def render(self, points, lengths=None) -> torch.Tensor:
        """depth[B, V, C, S, S] of a batch (tensor [B, N, 3], array, or list of [n_i, 3] clouds)."""
        from clip2point.kernels import render_depth

        batch, lengths = _as_batch(points, lengths, self.device)
        return render_depth(
            batch,
            self.bases,
            lengths=lengths,
            image_size=self.image_size,
            radius=self.radius,
            channels=self.in_channels,
            backend=self.render_backend,
        )

    def logits(self, points, lengths=None) -> torch.Tensor:
        """logits[B, K] (float32) of a batch of clouds; ragged lists are padded."""
        with torch.inference_mode():
            depth = self.render(points, lengths)
            out = self.head(depth)
            out = torch.as_tensor(out)
            return out.float()

    def predict(self, points, lengths=None) -> torch.Tensor:
        """probabilities[B, K]: softmax of the logits."""
        return torch.softmax(self.logits(points, lengths), dim=-1)

    def __call__(self, points, lengths=None) -> torch.Tensor:
        return self.predict(points, lengths)


def logit_scale_of(clip_model) -> float:
    """CLIP's learned temperature exp(logit_scale), clamped to 100 as in CLIP's training."""
    scale = getattr(clip_model, "logit_scale", None)
    if scale is None:
        return MAX_LOGIT_SCALE
    return float(min(float(torch.as_tensor(scale).detach().float().exp().reshape(-1)[0]), MAX_LOGIT_SCALE))


def load_classifier(
    labels: str | Sequence[str] | None = None,
    label_set: str | None = None,
    model: str = defaults.MODEL,
    pretrained: str = defaults.PRETRAINED,
    depth_encoder: str | None = None,
    views: int | Sequence[tuple[float, float]] = defaults.ZERO_SHOT_VIEWS,
    templates: Sequence[str] | None = None,
    device: str = "auto",
    fold: bool = True,
    render_backend: str = "auto",
    radius: float = defaults.POINT_RADIUS,
) -> PointCloudClassifier:
    """A zero-shot point-cloud classifier: frozen CLIP text features against depth-map features.

    `depth_encoder`: CLIP2Point pre-trained depth weights (this project's safetensors or the official
    checkpoint); None uses CLIP's own visual tower on depth maps (the PointCLIP-style baseline).
    """
    from .. import __version__
    from ..distributed import resolve_device
    from ..views import view_preset
    from .encoders import build_depth_encoder, load_clip, resolve_depth_encoder, sha256_file
    from .prompts import resolve_labels, resolve_templates, text_features

    class_names = resolve_labels(labels, label_set)
    if depth_encoder is not None:
        depth_encoder = resolve_depth_encoder(depth_encoder)
    prompt_templates = resolve_templates(templates)
    view_list = view_preset(views) if isinstance(views, int) else tuple(tuple(v) for v in views)
    if not view_list:
        raise UsageError("no views given")
    torch_device = resolve_device(device)
    bundle = load_clip(model, pretrained, device=torch_device)
    encoder = build_depth_encoder(bundle, weights=depth_encoder, fold=fold)
    text = text_features(bundle, class_names, prompt_templates)
    head = DepthMapClassifier(encoder, text, logit_scale_of(bundle.model), class_names, len(view_list))
    head.eval()
    meta = {
        "model": bundle.model_name,
        "pretrained": bundle.pretrained,
        "weights_id": bundle.weights_id,
        "depth_encoder": str(depth_encoder) if depth_encoder is not None else None,
        "depth_encoder_id": sha256_file(depth_encoder)[:12] if depth_encoder is not None else None,
        "views": [list(v) for v in view_list],
        "templates": prompt_templates,
        "image_size": encoder.image_size,
        "radius": float(radius),
        "folded": encoder.in_channels == 1,
        "version": __version__,
    }
    return PointCloudClassifier(
        head,
        class_names,
        view_list,
        in_channels=encoder.in_channels,
        device=torch_device,
        image_size=encoder.image_size,
        radius=radius,
        render_backend=render_backend,
        meta=meta,
    )
