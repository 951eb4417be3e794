"""open_clip loading (tags, files, random), depth-encoder weights in both formats, devices."""

from __future__ import annotations

import json
import time

import pytest
import torch

from clip2point.distributed import resolve_device
from clip2point.errors import (
    BackendUnavailableError,
    CheckpointError,
    ModelError,
    UsageError,
    WeightsUnavailableError,
)
from clip2point.models.encoders import (
    build_depth_encoder,
    clip_visual_encoder,
    load_clip,
    read_depth_encoder_meta,
    save_depth_encoder,
)

TINY = "c2p-tiny"


@pytest.fixture(scope="module")
def bundle():
    return load_clip(TINY, "none")


def _perturbed(state: dict[str, torch.Tensor], seed: int = 7) -> dict[str, torch.Tensor]:
    """Weights that differ from the seeded random init, so that a load that did nothing is caught."""
    g = torch.Generator().manual_seed(seed)
    return {k: v + 0.01 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v for k, v in state.items()}


def _depth(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 1, 224, 224, generator=torch.Generator().manual_seed(0))


def test_offline_tag_fails_fast_with_advice(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as info:
        load_clip("ViT-B-32", "openai")
    assert time.monotonic() - start < 10  # "fail fast" is the behaviour under test
    message = str(info.value)
    assert "ViT-B-32" in message and "'openai'" in message and "HF_HUB_OFFLINE" in message
    assert "'none' for random weights" in message and "--pretrained /path/to/weights" in message
    assert "\n" not in message


def test_unreachable_hub_fails_fast_without_retries(monkeypatch, tmp_path):
    """Online mode but no route to the Hub: a short probe answers instead of huggingface_hub's minute of retries."""
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    for proxy in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # discard port: refused
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match=r"no network \(cannot reach 127\.0\.0\.1:9"):
        load_clip("ViT-B-32", "laion2b_s34b_b79k")
    assert time.monotonic() - start < 10


def test_tag_weights_come_from_the_hugging_face_cache(bundle, monkeypatch, tmp_path):
    """A tag whose file is in the HF cache loads offline (hub layout: refs/main -> snapshots/<commit>/file)."""
    import huggingface_hub.constants
    import open_clip.pretrained
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME

    from clip2point.store.checkpoints import save_tensors

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setitem(
        open_clip.pretrained._PRETRAINED, TINY, {"c2p_test": {"hf_hub": "c2p/tiny-test/", "quick_gelu": True}}
    )
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--c2p--tiny-test"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    state = _perturbed(bundle.model.state_dict(), seed=3)
    save_tensors(repo / "snapshots" / commit / HF_SAFE_WEIGHTS_NAME, state)

    loaded = load_clip(TINY, "C2P-test")
    assert loaded.weights_id == "c2p-tiny/c2p_test" and loaded.pretrained == "c2p_test"
    got = loaded.model.state_dict()
    assert all(torch.equal(got[k], state[k]) for k in state)
    # the tag says QuickGELU, so the model was built with it (OpenAI's weights need it)
    from open_clip.transformer import QuickGELU

    assert any(isinstance(m, QuickGELU) for m in loaded.model.modules())
    assert not any(isinstance(m, QuickGELU) for m in bundle.model.modules())


def test_unknown_model_lists_close_matches():
    with pytest.raises(ModelError, match="ViT-B-32") as info:
        load_clip("ViT-B-31", "none")
    assert "list_models" in str(info.value)


def test_unknown_tag_lists_valid_tags():
    with pytest.raises(UsageError) as info:
        load_clip("ViT-B-32", "not_a_tag")
    assert "openai" in str(info.value) and "laion2b_s34b_b79k" in str(info.value)
    with pytest.raises(UsageError, match="no pretrained tags"):
        load_clip(TINY, "openai")


def test_missing_weights_file_is_named(tmp_path):
    missing = tmp_path / "nowhere.pt"
    with pytest.raises(WeightsUnavailableError, match="nowhere.pt"):
        load_clip(TINY, str(missing))


def test_random_init_is_seeded_and_leaves_global_rng_alone(bundle):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    again = load_clip(TINY, "none")
    assert torch.equal(torch.rand(1), expected_next)
    a, b = bundle.model.state_dict(), again.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert bundle.weights_id == "c2p-tiny/none/seed0"
    assert not any(p.requires_grad for p in bundle.model.parameters()) and not bundle.model.training


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_full_clip_file_round_trip(bundle, tmp_path, suffix):
    from clip2point.store.checkpoints import save_tensors

    state = _perturbed(bundle.model.state_dict())
    path = tmp_path / f"clip{suffix}"
    if suffix == ".pt":
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    else:
        save_tensors(path, state)
    loaded = load_clip(TINY, str(path))
    got = loaded.model.state_dict()
    assert all(torch.equal(got[k], state[k]) for k in state)
    assert loaded.weights_id.startswith("c2p-tiny/sha256:") and len(loaded.weights_id.split(":")[1]) == 12


def test_full_clip_file_of_wrong_architecture(tmp_path):
    other = load_clip("c2p-tiny-rn", "none")
    path = tmp_path / "rn.pt"
    torch.save(other.model.state_dict(), path)
    with pytest.raises(ModelError, match=r"rn\.pt.*(missing|unexpected|shape)"):
        load_clip(TINY, str(path))


class _Payload:
    """Unpickling this would run code (append to a list); weights_only loading must refuse it."""

    ran: list[str] = []

    def __reduce__(self):
        return (_Payload.ran.append, ("executed",))


def test_pickled_objects_are_refused_not_executed(bundle, tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": bundle.model.visual.state_dict(), "extra": _Payload()}, path)
    _Payload.ran.clear()
    with pytest.raises(CheckpointError, match="evil.pth"):
        build_depth_encoder(bundle, weights=path)
    with pytest.raises(CheckpointError, match="evil.pth"):
        load_clip(TINY, str(path))
    assert _Payload.ran == []


def test_depth_encoder_safetensors_round_trip(bundle, tmp_path):
    encoder = build_depth_encoder(bundle, fold=True, trainable=True)
    encoder.visual.load_state_dict(_perturbed(encoder.visual.state_dict()))
    encoder.eval()
    path = tmp_path / "depth.safetensors"
    save_depth_encoder(encoder, path, {"model": TINY, "weights_id": bundle.weights_id})
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["model"] == TINY and meta["format"] == "clip2point-depth-encoder" and "version" in meta
    assert read_depth_encoder_meta(path)["weights_id"] == bundle.weights_id

    for fold in (True, False):
        loaded = build_depth_encoder(bundle, weights=path, fold=fold)
        assert loaded.in_channels == (1 if fold else 3)
    loaded = build_depth_encoder(bundle, weights=path)
    with torch.no_grad():
        assert torch.equal(loaded(_depth()), encoder(_depth()))
        # the weights really changed the features (the load is not a no-op)
        assert not torch.allclose(clip_visual_encoder(bundle)(_depth()), encoder(_depth()))


def test_depth_encoder_with_visual_prefix(bundle, tmp_path):
    from clip2point.store.checkpoints import save_tensors

    state = _perturbed(bundle.model.visual.state_dict())
    path = tmp_path / "prefixed.safetensors"
    save_tensors(path, {f"visual.{k}": v for k, v in state.items()})
    loaded = build_depth_encoder(bundle, weights=path).visual.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state)


@pytest.mark.parametrize("layout", ["official", "nested"])
def test_official_clip2point_checkpoint(bundle, tmp_path, layout):
    """CLIP2Point's pretraining.py saves the DataParallel model's state dict: "module.point_model.<visual key>",
    "module.image_model.<visual key>", "module.weights"; variants nest it or keep a "visual." level."""
    depth_state = _perturbed(bundle.model.visual.state_dict(), seed=11)
    image_state = bundle.model.visual.state_dict()
    inner = "" if layout == "official" else "visual."
    state = {
        **{f"module.point_model.{inner}{k}": v for k, v in depth_state.items()},
        **{f"module.image_model.{inner}{k}": v for k, v in image_state.items()},
        "module.weights": torch.tensor(1.0),
    }
    path = tmp_path / "best_eval.pth"
    torch.save(state if layout == "official" else {"epoch": 42, "state_dict": state}, path)
    loaded = build_depth_encoder(bundle, weights=path)

    reference = build_depth_encoder(bundle, fold=True)
    reference.visual.load_state_dict(depth_state)
    with torch.no_grad():
        assert torch.equal(loaded(_depth()), reference(_depth()))


def test_depth_weights_of_wrong_architecture(bundle, tmp_path):
    from clip2point.store.checkpoints import save_tensors

    other = load_clip("c2p-tiny-rn", "none")
    path = tmp_path / "rn_depth.safetensors"
    save_tensors(path, other.model.visual.state_dict())
    with pytest.raises(ModelError, match=r"rn_depth\.safetensors.*missing: "):
        build_depth_encoder(bundle, weights=path)
    with pytest.raises(WeightsUnavailableError, match="absent.safetensors"):
        build_depth_encoder(bundle, weights=tmp_path / "absent.safetensors")


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UsageError, match="device"):
        resolve_device("tpu")
    with pytest.raises(UsageError):
        resolve_device("cuda:x")
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailableError, match="CUDA is not available"):
            resolve_device("cuda")
