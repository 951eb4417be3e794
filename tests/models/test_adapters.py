"""GDPA / DPA modules, the AdapterClassifier boundary, and the official few-shot checkpoint mapping."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clip2point.errors import CheckpointError, ModelError, UsageError
from clip2point.models.adapters import (
    AdapterClassifier,
    DualPathAdapter,
    ViewAggregator,
    build_adapter_classifier,
    convert_official_fewshot_state,
    load_official_fewshot,
)

V, D, K = 10, 16, 4


def _text(k=K, d=D, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(k, d, generator=g), dim=-1)


def _feats(b=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, V, D, generator=g), torch.randn(b, V, D, generator=g)


def test_view_aggregator_shapes_and_paper_initialisation():
    agg = ViewAggregator(V, D)
    assert torch.equal(agg.view_weight.detach(), torch.full((V,), 0.5))
    assert agg.fc1.in_features == V * D and agg.fc1.out_features == D and agg.fc2.out_features == D
    assert agg.dropout.p == pytest.approx(0.075)
    out = agg(torch.randn(5, V, D))
    assert out.shape == (5, D)


def test_gated_fusion_starts_as_dpa_and_then_learns_a_gate():
    torch.manual_seed(0)
    gated = DualPathAdapter(V, D, _text(), 10.0, "gated").eval()
    mean = DualPathAdapter(V, D, _text(), 10.0, "mean").eval()
    mean.path1.load_state_dict(gated.path1.state_dict())
    mean.path2.load_state_dict(gated.path2.state_dict())
    f1, f2 = _feats()
    assert torch.allclose(gated(f1, f2), mean(f1, f2), atol=1e-6)
    assert gated(f1, f2).shape == (6, K)
    # One optimisation step moves the (zero-initialised) gate: the gradient reaches it.
    gated.train()
    opt = torch.optim.AdamW(gated.parameters(), lr=1e-2)
    loss = torch.nn.functional.cross_entropy(gated(f1, f2), torch.arange(6) % K)
    loss.backward()
    assert gated.fusion.gate.weight.grad.abs().sum() > 0
    opt.step()
    gated.eval()
    assert not torch.allclose(gated(f1, f2), mean(f1, f2), atol=1e-4)


def test_adapter_rejects_bad_options():
    with pytest.raises(UsageError, match="fusion must be one of"):
        DualPathAdapter(V, D, _text(), 10.0, "max")
    with pytest.raises(ModelError, match="do not match the visual feature size"):
        DualPathAdapter(V, D, _text(d=D + 1), 10.0, "mean")


def test_logits_are_unscaled_cosines_of_the_fused_feature_of_raw_view_features():
    """The official head: raw per-view features into both aggregators (no L2 normalisation first),
    logits = normalised fused feature . text^T with scale 1 (the scale 7 is only a reporting temperature)."""
    torch.manual_seed(0)
    adapter = DualPathAdapter(V, D, _text(), 7.0, "mean").eval()
    assert not adapter.normalize_views
    f1, f2 = _feats()
    f1, f2 = 10 * f1, 3 * f2  # raw features are not unit vectors, and their norm matters
    z = adapter.features(f1, f2)
    assert torch.allclose(z.norm(dim=-1), torch.ones(6), atol=1e-6)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(0.5 * (adapter.path1(f1) + adapter.path2(f2)), dim=-1)
    assert torch.allclose(z, expected, atol=1e-6)
    assert torch.allclose(adapter(f1, f2), z @ _text().t(), atol=1e-6)
    normalised = torch.nn.functional.normalize(f1, dim=-1), torch.nn.functional.normalize(f2, dim=-1)
    assert not torch.allclose(adapter.features(*normalised), z, atol=1e-3)


@pytest.fixture(scope="module")
def tiny_bundle(tiny_model_name):
    from clip2point.models.encoders import load_clip

    return load_clip(tiny_model_name, "none")


def test_adapter_classifier_is_a_traceable_depth_boundary(tiny_bundle):
    from clip2point.models.prompts import text_features

    labels = ["cube", "sphere", "cone"]
    torch.manual_seed(0)
    clf = build_adapter_classifier(tiny_bundle, labels, text_features(tiny_bundle, labels), V, "gated").eval()
    assert isinstance(clf, AdapterClassifier)
    assert clf.labels == labels and clf.num_views == V and clf.in_channels == 1
    assert not any(p.requires_grad for p in clf.depth_encoder.parameters())
    depth = torch.rand(2, V, 1, 224, 224)
    with torch.no_grad():
        logits = clf(depth)
        f1 = clf.depth_encoder(depth.flatten(0, 1)).reshape(2, V, -1)
        f2 = clf.clip_encoder(depth.flatten(0, 1)).reshape(2, V, -1)
        assert logits.shape == (2, 3)
        # Reported logits carry the recorded temperature; the official (training) logits do not.
        assert torch.allclose(clf.official_logits(depth), clf.adapter(f1, f2), atol=1e-5)
        assert torch.allclose(logits, clf.adapter.logit_scale * clf.adapter(f1, f2), atol=1e-4)
    # torch.export (what the ONNX exporter runs) with a dynamic batch: no data-dependent control flow.
    batch = torch.export.Dim("batch", min=1, max=1024)
    exported = torch.export.export(clf, (depth,), dynamic_shapes={"depth": {0: batch}})
    three = torch.rand(3, V, 1, 224, 224)
    with torch.no_grad():
        assert torch.allclose(exported.module()(three), clf(three), atol=1e-5)


# --- the official checkpoint ------------------------------------------------------------------


class _BatchNormPoint(nn.Module):
    """PointCLIP / CLIP2Point's per-channel batch norm over [B, V, D] (wraps .bn)."""

    def __init__(self, d):
        super().__init__()
        self.bn = nn.BatchNorm1d(d)

    def forward(self, x):
        b, v, d = x.shape
        return self.bn(x.reshape(b * v, d)).reshape(b, v, d)


class _TheirSimplifiedAdapter(nn.Module):
    """The official simplified adapter as PAPER_NOTES describes it, with PointCLIP's module names."""

    def __init__(self, v, d, feature_norm=1.0):
        super().__init__()
        self.fusion_ratio = nn.Parameter(0.3 + 0.4 * torch.rand(v))
        self.global_f = nn.Sequential(
            _BatchNormPoint(d), nn.Dropout(0.075), nn.Flatten(), nn.Linear(v * d, d), nn.BatchNorm1d(d),
            nn.ReLU(), nn.Dropout(0.075), nn.Linear(d, d),
        )
        for bn in (self.global_f[0].bn, self.global_f[4]):  # non-trivial statistics, so a mix-up shows
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.1, 0.1)
        # Statistics of the first norm as training on features of norm `feature_norm` leaves them.
        w2 = float((self.fusion_ratio.detach() ** 2).mean())
        self.global_f[0].bn.running_mean.mul_(0.3 * feature_norm * w2**0.5 / d**0.5)
        self.global_f[0].bn.running_var.mul_(feature_norm**2 * w2 / d)

    def forward(self, feat):
        return self.global_f(feat * self.fusion_ratio.reshape(1, -1, 1))


def test_official_adapter_keys_map_onto_view_aggregator():
    torch.manual_seed(0)
    theirs = _TheirSimplifiedAdapter(V, D).eval()
    state = {f"adapter1.{k}": v for k, v in theirs.state_dict().items()}
    state.update({f"adapter2.{k}": v for k, v in theirs.state_dict().items()})
    state["pre_model.visual.proj"] = torch.zeros(2, 2)
    state["ori_model.visual.proj"] = torch.zeros(2, 2)
    parts = convert_official_fewshot_state(state)
    ours = ViewAggregator(V, D).eval()
    ours.load_state_dict(parts["path1"], strict=True)
    x = torch.randn(5, V, D)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), atol=1e-5)
    assert set(parts["depth"]) == {"proj"}
    with pytest.raises(CheckpointError, match="no mapping for adapter key 'global_f.9.weight'"):
        convert_official_fewshot_state({**state, "adapter1.global_f.9.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"no ori_model\.\* entries"):
        convert_official_fewshot_state({k: v for k, v in state.items() if not k.startswith("ori_model")})


def test_official_checkpoint_loads_into_the_mean_fusion_classifier(tmp_path, tiny_bundle):
    from clip2point.models.prompts import text_features

    torch.manual_seed(1)
    visual = tiny_bundle.model.visual.state_dict()
    depth_state = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v for k, v in visual.items()}
    dim = tiny_bundle.model.visual.output_dim
    a1, a2 = _TheirSimplifiedAdapter(V, dim).eval(), _TheirSimplifiedAdapter(V, dim).eval()
    state = {f"module.pre_model.visual.{k}": v for k, v in depth_state.items()}
    state.update({f"module.ori_model.visual.{k}": v for k, v in visual.items()})
    state["module.pre_model.token_embedding.weight"] = torch.zeros(3, 2)  # a whole CLIP: text tower ignored
    state.update({f"module.adapter1.{k}": v for k, v in a1.state_dict().items()})
    state.update({f"module.adapter2.{k}": v for k, v in a2.state_dict().items()})
    path = tmp_path / "best_model.pth"
    torch.save({"model_state_dict": state, "epoch": 7}, path)

    labels = ["cube", "sphere"]
    clf = load_official_fewshot(path, tiny_bundle, labels)
    assert clf.adapter.fusion_kind == "mean" and clf.labels == labels and not clf.adapter.normalize_views
    got = clf.depth_encoder.visual.state_dict()
    assert all(torch.equal(got[k], depth_state[k]) for k in depth_state)
    depth = torch.rand(2, V, 1, 224, 224)
    with torch.no_grad():
        f1, f2 = clf.encode(depth)  # dpa.py: adapter1(pre_model(imgs)), adapter2(ori_model(imgs)), raw
        z = torch.nn.functional.normalize(0.5 * (a1(f1) + a2(f2)), dim=-1)
        expected = z @ text_features(tiny_bundle, labels).t()
        assert torch.allclose(clf.official_logits(depth), expected, atol=1e-5)
        assert torch.allclose(clf(depth), clf.adapter.logit_scale * expected, atol=1e-4)

    # The same file through the classify / eval entry point (labels given, as the file has none).
    from clip2point.models.adapters import load_adapter_classifier

    pcc = load_adapter_classifier(path, device="cpu", labels=labels, model=tiny_bundle.model_name, pretrained="none")
    assert pcc.labels == labels and pcc.num_views == V and pcc.meta["fusion"] == "mean"
    cloud = torch.nn.functional.normalize(torch.randn(1, 300, 3), dim=-1)
    assert pcc.predict(cloud).shape == (1, 2)
