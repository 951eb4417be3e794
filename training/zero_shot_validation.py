"""Zero-shot accuracy of the depth encoder while pre-training trains it (`--val`).

The encoder is wrapped, as it is, in the zero-shot classifier of `clip2point.models.classifier`
with the default prompt, and scored by `clip2point.evaluate.evaluate_classifier`, the same
evaluation as `c2p eval`.
"""

from __future__ import annotations

import torch
from torch import nn

from clip2point import defaults

from .image_features import bf16_autocast


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
        with bf16_autocast(device, bf16):
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
