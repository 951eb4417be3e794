"""Depth maps -> logits, points -> probabilities, and the zero-shot loader end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clip2point.errors import UsageError
from clip2point.models.classifier import (
    DepthMapClassifier,
    PointCloudClassifier,
    load_classifier,
    logit_scale_of,
)
from clip2point.models.encoders import build_depth_encoder, load_clip
from clip2point.models.prompts import text_features

LABELS = ["cube", "sphere", "cone", "torus"]


@pytest.fixture(scope="module")
def bundle():
    return load_clip("c2p-tiny", "none")


@pytest.fixture(scope="module")
def head(bundle, tmp_path_factory):
    encoder = build_depth_encoder(bundle, fold=True)
    text = text_features(bundle, LABELS, cache_dir=tmp_path_factory.mktemp("text"))
    return DepthMapClassifier(encoder, text, logit_scale_of(bundle.model), LABELS, num_views=3).eval()


def _clouds(sizes, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for n in sizes:
        cloud = rng.standard_normal((n, 3)).astype(np.float32) * np.array([0.6, 0.3, 0.2], dtype=np.float32)
        out.append(cloud / np.linalg.norm(cloud, axis=1).max())
    return out


def test_depth_map_classifier_is_the_mean_of_view_cosines(head):
    depth = torch.rand(2, 3, 1, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = head(depth)
        features = torch.nn.functional.normalize(head.encoder(depth.flatten(0, 1)), dim=-1).view(2, 3, -1)
        per_view = features @ head.text_features.t()  # [B, V, K]
    assert logits.shape == (2, len(LABELS))
    assert torch.allclose(logits, head.logit_scale * per_view.mean(1), atol=1e-4)
    assert torch.equal(logits.argmax(-1), per_view.sum(1).argmax(-1))  # the paper's sum: same decision
    assert (head.labels, head.in_channels, head.num_views) == (LABELS, 1, 3)
    assert head.logit_scale == pytest.approx(1 / 0.07, rel=1e-4)  # open_clip's initial temperature


def test_text_features_must_match_labels(bundle):
    encoder = build_depth_encoder(bundle)
    with pytest.raises(UsageError, match="3 labels"):
        DepthMapClassifier(encoder, torch.zeros(4, 64), 100.0, ["a", "b", "c"], 6)


def test_point_cloud_classifier(head):
    model = PointCloudClassifier(head, LABELS, [(0, 0), (0, 90), (90, 0)], in_channels=1, device="cpu",
                                 render_backend="torch", meta={"model": "c2p-tiny"})
    clouds = _clouds([200, 350, 120])
    probs = model.predict(clouds)
    assert probs.shape == (3, len(LABELS))
    assert torch.allclose(probs.sum(-1), torch.ones(3), atol=1e-5)
    # padding a ragged batch does not change any cloud's result
    for i, cloud in enumerate(clouds):
        assert torch.allclose(model.predict([cloud])[0], probs[i], atol=1e-5)
    # a padded tensor with lengths is the same as the list
    padded = torch.zeros(3, 350, 3)
    for i, cloud in enumerate(clouds):
        padded[i, : len(cloud)] = torch.from_numpy(cloud)
    assert torch.allclose(model.logits(padded, torch.tensor([200, 350, 120])), model.logits(clouds), atol=1e-5)
    assert torch.equal(model.logits(clouds), model.logits(clouds))  # deterministic
    assert model.num_views == 3 and model.meta["model"] == "c2p-tiny"


def test_any_callable_head(head):
    """Exported-graph runners return numpy; the classifier takes any callable depth -> logits."""
    seen = []

    def runner(depth):
        seen.append(tuple(depth.shape))
        return head(depth).numpy()

    model = PointCloudClassifier(runner, LABELS, [(0, 0), (0, 90), (90, 0)], in_channels=1, device="cpu",
                                 render_backend="torch")
    logits = model.logits(_clouds([100, 100]))
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, len(LABELS))
    assert seen == [(2, 3, 1, 224, 224)]


def test_bad_clouds_are_usage_errors(head):
    model = PointCloudClassifier(head, LABELS, 6, in_channels=1, device="cpu", render_backend="torch")
    with pytest.raises(UsageError, match="point cloud 1 has shape"):
        model.logits([np.zeros((5, 3)), np.zeros((5, 2))])
    with pytest.raises(UsageError, match="no point clouds"):
        model.logits([])


def test_load_classifier_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("C2P_CACHE_DIR", str(tmp_path))
    model = load_classifier(labels="cube,sphere,cone", model="c2p-tiny", pretrained="none", views=6,
                            templates=["a depth map of a {}."], device="cpu", render_backend="torch")
    assert model.labels == ["cube", "sphere", "cone"] and model.in_channels == 1 and model.num_views == 6
    meta = model.meta
    assert (meta["model"], meta["pretrained"], meta["weights_id"]) == ("c2p-tiny", "none", "c2p-tiny/none/seed0")
    assert meta["templates"] == ["a depth map of a {}."] and len(meta["views"]) == 6 and meta["image_size"] == 224
    assert not any(p.requires_grad for p in model.head.parameters()) and not model.head.training
    clouds = _clouds([256, 256])
    probs = model.predict(clouds)
    assert probs.shape == (2, 3) and torch.allclose(probs.sum(-1), torch.ones(2), atol=1e-5)

    unfolded = load_classifier(labels="cube,sphere,cone", model="c2p-tiny", pretrained="none", views=6,
                               templates=["a depth map of a {}."], device="cpu", fold=False,
                               render_backend="torch")
    assert unfolded.in_channels == 3
    assert torch.allclose(unfolded.predict(clouds), probs, atol=1e-5)
    assert len(list((tmp_path / "text_features").glob("*.safetensors"))) == 1  # second load hit the cache
