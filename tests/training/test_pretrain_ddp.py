"""`c2p pretrain` under torchrun: two CPU processes (gloo) train one model on the global batch.

The same command runs with `torchrun --nproc_per_node 2`. Checks: both ranks end with identical
weights, only rank 0 writes (one checkpoint, one metrics line per step), and, because features
are gathered across ranks before the loss, two ranks with batch 4 train exactly like one process
with batch 8 (same samples, same negatives, same gradient).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from clip2point.distributed import weights_digest
from clip2point.store.checkpoints import load_tensors, read_json
from clip2point.training import image_features as IF
from clip2point.training import pretrain as T
from clip2point.training.pretrain_checkpoints import latest_checkpoint
from tests.pretrain_helpers import TINY, make_pairs, one_thread


def _metrics(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def _model_tensors(run):
    tensors = load_tensors(latest_checkpoint(run) / "state.safetensors")
    return {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}


@pytest.mark.slow
def test_two_gloo_ranks_train_like_one_process_with_the_global_batch(tmp_path):
    with one_thread():
        pairs = make_pairs(tmp_path / "pairs", ["cube", "torus", "chair", "mug"], per_class=2, n_points=1024)
    run = tmp_path / "ddp"
    common = ["--epochs", "2", "--optimizer", "adamw", "--lr", "1e-4", "--device", "cpu", "--workers", "0",
              "--render-backend", "torch", "--points", "512", "--feature-cache-dir", str(tmp_path / "features")]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", C2P_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "clip2point.app", "pretrain", str(pairs), str(run), "-m", TINY, "--pretrained", "none",
           "-b", "4", *common]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]

    summary = read_json(run / "run.json")
    assert summary["world_size"] == 2 and summary["steps"] == 2  # 8 pairs / (2 ranks x 4) = 1 step per epoch
    digests = summary["rank_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1] and summary["ranks_in_sync"]
    assert weights_digest(_model_tensors(run)) == digests[0]  # the checkpoint holds those weights
    assert [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("step-")] == ["step-00000002"]
    assert not [p for p in (run / "checkpoints").iterdir() if ".tmp" in p.name]
    config = read_json(run / "config.json")
    assert config["world_size"] == 2 and config["effective_batch"] == 8 and config["negatives_per_loss"] == 8
    ddp_steps = [m for m in _metrics(run) if m["kind"] == "step"]
    assert [m["step"] for m in ddp_steps] == [1, 2]  # rank 0 alone writes metrics

    # The two ranks built the image-feature cache together (half the renders each): it holds what one
    # process computes alone.
    from clip2point.models.encoders import load_clip
    from clip2point.training.pairs import open_pairs

    cache = read_json(run / "config.json")["image_feature_cache"]
    assert cache["hit"] is False
    torch.manual_seed(0)
    with one_thread():
        visual = load_clip(TINY, "none").model.visual
        alone = IF.compute_image_features(visual, open_pairs(pairs), torch.device("cpu"))
    together = load_tensors(cache["path"])["features"]
    assert together.abs().sum(-1).min() > 0
    torch.testing.assert_close(together.float(), alone.float(), atol=2e-3, rtol=2e-3)

    # One process, batch 8: the same 8 samples per step, the same negatives, the same gradient.
    with one_thread():
        single = T.pretrain(T.PretrainConfig(
            data=str(pairs), out=str(tmp_path / "single"), model=TINY, pretrained="none", epochs=2, batch_size=8,
            optimizer="adamw", lr=1e-4, device="cpu", workers=0, render_backend="torch", n_points=512,
            feature_cache_dir=str(tmp_path / "features"),
        ))
    single_steps = [m for m in _metrics(tmp_path / "single") if m["kind"] == "step"]
    for a, b in zip(ddp_steps, single_steps, strict=True):
        for key in ("loss", "loss_intra", "loss_cross", "w"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), key
    ddp_w, single_w = _model_tensors(run), _model_tensors(tmp_path / "single")
    assert single.steps == 2
    for name in single_w:
        a, b = ddp_w[name], single_w[name]
        if name.endswith("attn.in_proj_bias"):
            # The key bias has a gradient of exactly zero in theory (softmax ignores it); AdamW turns the
            # rounding noise of either run into lr-sized steps, so only the query and value parts compare.
            width = a.shape[0] // 3
            a, b = torch.cat([a[:width], a[2 * width:]]), torch.cat([b[:width], b[2 * width:]])
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), name


def test_process_group_gets_a_long_configurable_timeout(monkeypatch):
    """Rank 0 alone builds the image-feature cache while the others wait: NCCL's 10 minutes are too short."""
    from datetime import timedelta

    import torch.distributed as dist

    from clip2point import distributed as D
    from clip2point.errors import UsageError

    calls = []
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: calls.append(kw))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.delenv(D.TIMEOUT_ENV, raising=False)
    ctx = D.setup(torch.device("cpu"))
    assert ctx.rank == 1 and ctx.world_size == 2 and ctx.initialised_here
    assert calls[-1]["backend"] == "gloo" and calls[-1]["timeout"] == timedelta(hours=2)
    monkeypatch.setenv(D.TIMEOUT_ENV, "300")
    D.setup(torch.device("cpu"))
    assert calls[-1]["timeout"] == timedelta(minutes=300)
    for bad in ("soon", "0"):
        monkeypatch.setenv(D.TIMEOUT_ENV, bad)
        with pytest.raises(UsageError, match=D.TIMEOUT_ENV):
            D.setup(torch.device("cpu"))
