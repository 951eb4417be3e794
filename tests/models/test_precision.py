"""Encoder precision: CPU bf16 detection, what `auto` picks, and bf16 applied once to a classifier.

bf16 itself is checked for answers on the trained demo model (tests/models/test_demo_model.py);
here: the detection, the rules, that the cast reaches every encoder and nothing else, that folding
BatchNorms is exact, and that few-shot features of another precision get their own cache entry.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from clip2point.errors import OptionError
from clip2point.models import precision as prec
from clip2point.models.classifier import load_classifier
from clip2point.models.encoders import DepthEncoder, FoldedStemConv, build_depth_encoder, load_clip

needs_bf16 = pytest.mark.skipif(not prec.native_bf16_cpu(), reason="this CPU has no bfloat16 instructions")
LABELS = ["cube", "sphere", "cone", "torus"]


@pytest.fixture
def cpuinfo(tmp_path, monkeypatch):
    """Write a /proc/cpuinfo stand-in; returns a function that sets its text."""

    def write(text: str) -> None:
        path = tmp_path / "cpuinfo"
        path.write_text(text)
        monkeypatch.setattr(prec, "CPUINFO", path)
        prec.cpu_flags.cache_clear()

    monkeypatch.setattr(prec, "_torch_bf16_capabilities", lambda: [])
    yield write
    prec.cpu_flags.cache_clear()


def test_native_bf16_is_read_from_the_cpu_flags(cpuinfo):
    cpuinfo("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert prec.cpu_flags() >= {"avx512_bf16", "avx2"} and prec.native_bf16_cpu()
    cpuinfo("processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_tile amx_bf16\n")
    found = prec.cpu_bf16()
    assert found["native"] and found["flags"] == ["amx_bf16"] and found["source"].startswith("/proc/cpuinfo")
    cpuinfo("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")  # Arm (Graviton 3, Neoverse V1)
    assert prec.native_bf16_cpu()
    cpuinfo("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni\n")  # AVX-512 without bf16
    assert not prec.native_bf16_cpu()


def test_auto_picks_bf16_on_such_cpus_fp16_on_cuda_and_fp32_elsewhere(monkeypatch):
    monkeypatch.setattr(prec, "native_bf16_cpu", lambda: True)
    assert prec.resolve_precision("auto", "cpu") == "bf16"
    assert prec.resolve_precision("auto", "cuda") == "fp16"
    assert prec.resolve_precision("auto", "cpu", torch_model=False) == "fp32"  # an exported engine keeps its own
    assert prec.resolve_precision(None, "cpu") == prec.resolve_precision("fp32", "cuda") == "fp32"
    assert prec.resolve_precision("BF16", "cpu") == "bf16"
    monkeypatch.setattr(prec, "native_bf16_cpu", lambda: False)
    assert prec.resolve_precision("auto", "cpu") == "fp32"
    assert prec.resolve_precision("bf16", "cuda") == "bf16"


@pytest.mark.parametrize(("precision", "device", "torch_model", "message"), [
    ("fp16", "cpu", True, "precision='fp16' needs a CUDA device"),
    ("bf16", "cpu", True, "needs a CPU with bfloat16 instructions"),
    ("bf16", "cuda", False, "applies to torch models"),
    ("fp8", "cpu", True, "precision must be one of fp32, fp16, bf16, auto"),
])  # fmt: skip
def test_a_precision_this_machine_cannot_run_fast_is_refused(monkeypatch, precision, device, torch_model, message):
    monkeypatch.setattr(prec, "native_bf16_cpu", lambda: False)
    with pytest.raises(OptionError, match=message.replace("(", r"\(")):
        prec.resolve_precision(precision, device, torch_model)


def test_the_option_declaration_keeps_fp32_as_default():
    option = prec.precision_option()
    assert option["default"] == "fp32" and tuple(option["choices"]) == ("fp32", "fp16", "bf16", "auto")


@pytest.mark.parametrize("model", ["c2p-demo", "c2p-tiny-rn"])
def test_folding_batch_norms_into_convolutions_is_exact(model):
    """BN(conv(x)) = s * conv(x) + t, the folded stem included: float32 outputs equal up to rounding."""
    encoder = build_depth_encoder(load_clip(model, "c2p-demo" if model == "c2p-demo" else "none"), fold=True)
    torch.manual_seed(0)
    for module in encoder.modules():  # random weights: statistics and affine terms away from (0, 1) too
        if isinstance(module, torch.nn.BatchNorm2d) and model != "c2p-demo":
            for tensor, low, high in ((module.running_mean, -0.5, 0.5), (module.running_var, 0.5, 2.0),
                                      (module.weight, 0.5, 1.5), (module.bias, -0.2, 0.2)):  # fmt: skip
                tensor.data.uniform_(low, high)
    folded = copy.deepcopy(encoder)
    count = prec.fold_batch_norms(folded.visual)
    assert count > 0 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert isinstance(folded.visual.conv1, FoldedStemConv) and folded.visual.conv1.bias is not None
    x = torch.rand(3, 1, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = encoder(x), folded(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    assert prec.fold_batch_norms(load_clip("c2p-tiny", "none").model.visual) == 0  # a ViT: nothing to fold


@needs_bf16
def test_bf16_casts_every_encoder_once_and_nothing_else(tmp_path):
    clf = load_classifier(labels=LABELS, model="c2p-tiny-rn", pretrained="none", device="cpu")
    clouds = [np.random.default_rng(i).standard_normal((300, 3)).astype(np.float32) * 0.5 for i in range(2)]
    reference = clf.logits(clouds)
    assert prec.apply_precision(clf, "bf16") == "bf16" and clf.precision == "bf16" and clf.meta["precision"] == "bf16"
    encoder = clf.head.encoder
    stem = encoder.visual.conv1
    assert isinstance(stem, FoldedStemConv) and stem.weight.dtype == torch.float32  # folded in float32, then cast
    others = [p for name, p in encoder.visual.named_parameters() if not name.startswith("conv1.")]
    assert others and all(p.dtype == torch.bfloat16 for p in others)
    assert encoder.channels_last and clf.head.text_features.dtype == torch.float32
    logits = clf.logits(clouds)
    assert logits.dtype == torch.float32 and torch.equal(logits.argmax(-1), reference.argmax(-1))
    assert prec.apply_precision(clf, "bf16") == "bf16"  # once: the second time changes nothing
    assert all(p.dtype == torch.bfloat16 for p in others)
    with pytest.raises(OptionError, match="built in bf16: build it again"):
        prec.apply_precision(clf, "fp32")


@needs_bf16
def test_the_classifier_takes_its_precision_when_built_and_the_vit_casts_too():
    from clip2point.models.classifier import PointCloudClassifier

    fp32 = load_classifier(labels=LABELS, model="c2p-tiny", pretrained="none", device="cpu")
    head = copy.deepcopy(fp32.head)
    bf16 = PointCloudClassifier(head, LABELS, fp32.views, in_channels=1, device="cpu", precision="auto")
    assert bf16.precision == "bf16" and not head.encoder.channels_last  # no convolutions to speak of
    assert head.encoder.visual.transformer.resblocks[0].attn.in_proj_weight.dtype == torch.bfloat16
    cloud = np.random.default_rng(0).standard_normal((500, 3)).astype(np.float32) * 0.4
    a, b = fp32.head.encoder(fp32.render([cloud]).flatten(0, 1)), head.encoder(bf16.render([cloud]).flatten(0, 1))
    assert b.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(a, b).min() > 0.99


def test_fp32_is_the_tower_as_built():
    """Float32 runs exactly the tower's own forward (the official computation): no cast, no copy."""
    encoder = build_depth_encoder(load_clip("c2p-tiny", "none"), fold=True)
    x = torch.rand(2, 1, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(encoder(x), encoder.visual(x))
    assert (encoder.precision, encoder.cast_inputs, encoder.autocast) == ("fp32", None, None)


@needs_bf16
def test_fewshot_features_of_another_precision_get_their_own_cache_entry(tmp_path):
    from clip2point import synth
    from clip2point.training.datasets import open_dataset
    from clip2point.training.features import RenderSettings, cached_features

    root = tmp_path / "data"
    synth.write_dataset(root, classes=["cube", "cone"], per_class=2, test_per_class=0, fmt="npy", n_points=256, seed=0)
    ds = open_dataset(root, split="train", n_points=128)
    bundle = load_clip("c2p-tiny", "none")
    encoders = [build_depth_encoder(bundle, fold=True) for _ in range(2)]
    settings = RenderSettings(6, 224, 0.02, 1)
    ids = {"depth": "tiny", "clip": "tiny"}
    cache = tmp_path / "cache"
    fp32, hit = cached_features(ds, range(len(ds)), *encoders, settings, ids, cache)
    assert not hit
    low = [copy.deepcopy(e) for e in encoders]
    prec.apply_precision(torch.nn.ModuleList(low), "bf16", device="cpu")
    assert all(isinstance(e, DepthEncoder) and e.precision == "bf16" for e in low)
    bf16, hit = cached_features(ds, range(len(ds)), *low, settings, ids, cache)
    assert not hit and len(list(cache.glob("*.safetensors"))) == 2  # not fp32's file
    assert bf16.depth.dtype == torch.float32 and not torch.equal(bf16.depth, fp32.depth)
    cos = torch.nn.functional.cosine_similarity(bf16.depth.flatten(0, 1), fp32.depth.flatten(0, 1))
    assert cos.min() > 0.99
    assert cached_features(ds, range(len(ds)), *low, settings, ids, cache)[1]  # and found again
