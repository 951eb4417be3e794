"""Image-depth pre-training: the objective learns, checkpoints resume exactly, the CLI runs.

Everything runs the c2p-tiny CLIP on CPU, one thread (see tests.pretrain_helpers.one_thread).
"""

from __future__ import annotations

import json
import signal

import pytest

from clip2point.distributed import DistContext, weights_digest
from clip2point.errors import CheckpointError, UsageError
from clip2point.store.checkpoints import load_tensors, read_json
from clip2point.training import image_features as IF
from clip2point.training import pretrain as T
from clip2point.training import pretrain_batches as B
from clip2point.training.pairs import open_pairs
from clip2point.training.pretrain_checkpoints import latest_checkpoint
from tests.cli_helpers import run_c2p
from tests.pretrain_helpers import TINY, alignment_margin, make_pairs, one_thread, spread_tiny_clip


@pytest.fixture(scope="module")
def pairs16(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs16")
    with one_thread():
        return make_pairs(root / "pairs", ["cube", "sphere", "torus", "chair"], per_class=4)


@pytest.fixture(scope="module")
def spread_clip(pairs16, tmp_path_factory):
    with one_thread():
        return spread_tiny_clip(pairs16, tmp_path_factory.mktemp("clip") / "tiny.safetensors")


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield


def _config(data, out, tmp_path, **kw) -> T.PretrainConfig:
    base = dict(
        data=str(data), out=str(out), model=TINY, pretrained="none", epochs=2, batch_size=8, optimizer="lamb",
        lr=6e-3, device="cpu", render_backend="torch", feature_cache_dir=str(tmp_path / "features"), seed=0,
    )
    base.update(kw)
    return T.PretrainConfig(**base)


def _epochs(run) -> list[dict]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [x for x in lines if x["kind"] == "epoch"]


def test_pretraining_lowers_both_losses_and_aligns_depth_with_images(pairs16, spread_clip, tmp_path):
    from clip2point.models.encoders import build_depth_encoder, load_clip

    run = tmp_path / "run"
    # 60 epochs: with the official zoom (d1, d2 scale the cloud by 1/d) the two depth maps of a pair
    # differ in size, and the tiny encoder needs ~40 epochs before the intra term drops below chance.
    cfg = _config(pairs16, run, tmp_path, pretrained=str(spread_clip), epochs=60)
    result = T.pretrain(cfg)
    assert result.steps == 120 and not result.interrupted
    epochs = _epochs(run)
    assert len(epochs) == 60
    first, last = epochs[0], epochs[-1]
    assert last["loss_intra_mean"] < first["loss_intra_mean"] - 0.2
    assert last["loss_cross_mean"] < first["loss_cross_mean"] - 1.0

    bundle = load_clip(TINY, str(spread_clip))
    index = open_pairs(pairs16)
    features, _, hit = IF.cached_image_features(bundle, index, DistContext(), image_size=224, bf16=False,
                                               cache_dir=cfg.feature_cache_dir)
    assert hit  # the run cached them
    untrained = alignment_margin(build_depth_encoder(bundle), index, features, render_backend="torch")
    trained = alignment_margin(build_depth_encoder(bundle, weights=run / "depth_encoder.safetensors"), index,
                                 features, render_backend="torch")
    # Calibrated on this data: untrained ~0.03, trained ~0.18 (cosine own image minus mean cosine other images).
    assert untrained["margin"] < 0.06
    assert trained["margin"] > 0.08
    assert trained["own"] > trained["other"]


def _digest(run) -> str:
    tensors = load_tensors(latest_checkpoint(run) / "state.safetensors")
    return weights_digest({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})


def test_interrupted_and_killed_runs_resume_to_the_same_result(pairs16, tmp_path):
    # 16 pairs, batch 4: 4 optimiser steps per epoch, 3 epochs = 12 steps.
    kw = dict(batch_size=4, epochs=3, optimizer="adamw", lr=1e-4)
    reference = T.pretrain(_config(pairs16, tmp_path / "a", tmp_path, **kw))
    assert reference.steps == 12

    run = tmp_path / "b"

    def ctrl_c_at_step_6(event):  # mid-epoch 2: the real SIGINT handler saves and stops
        if event.kind == "step" and event.done == 6:
            signal.raise_signal(signal.SIGINT)

    first = T.pretrain(_config(pairs16, run, tmp_path, **kw), on_event=ctrl_c_at_step_6)
    assert first.interrupted and first.steps == 6
    assert read_json(run / "checkpoints/latest.json")["step"] == 6
    assert read_json(latest_checkpoint(run) / "state.json")["position"] == 2  # two batches into epoch 2

    with pytest.raises(UsageError, match="continue it with resume"):
        T.pretrain(_config(pairs16, run, tmp_path, **kw))

    class Killed(Exception):
        pass

    def die_at_step_10(event):  # no checkpoint: the next run goes back to the end of epoch 2
        if event.kind == "step" and event.done == 10:
            raise Killed

    with pytest.raises(Killed):
        T.pretrain(_config(pairs16, run, tmp_path, resume=True, **kw), on_event=die_at_step_10)
    assert read_json(run / "checkpoints/latest.json")["step"] == 8

    resumed = T.pretrain(_config(pairs16, run, tmp_path, resume=True, **kw))
    assert resumed.steps == reference.steps == 12 and not resumed.interrupted
    assert _digest(run) == _digest(tmp_path / "a")  # bit-identical weights, optimiser and all
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["kind"] == "step"]
    assert steps == list(range(1, 13))  # lines of the lost steps 9-10 were dropped, then redone
    assert len(list((run / "checkpoints").glob("step-*"))) == 1


def test_checkpoint_files_are_safetensors_and_json(pairs16, tmp_path):
    from clip2point.synth import write_dataset

    write_dataset(tmp_path / "val", ["cube", "torus"], per_class=0, test_per_class=2, fmt="npy", n_points=256)
    run = tmp_path / "run"
    T.pretrain(_config(pairs16, run, tmp_path, epochs=1, accumulate=2, optimizer="adamw", lr=1e-4,
                       val=str(tmp_path / "val")))
    epoch = _epochs(run)[0]
    assert epoch["val_samples"] == 4 and 0.0 <= epoch["val_acc"] <= 1.0
    folder = latest_checkpoint(run)
    assert sorted(p.name for p in folder.iterdir()) == ["state.json", "state.safetensors"]
    state = read_json(folder / "state.json")
    assert state["step"] == 1 and state["epoch"] == 1  # 2 batches, accumulated into 1 step
    assert state["scheduler"]["T_0"] == 2  # restarts every 2 epochs' worth of steps
    tensors = load_tensors(folder / "state.safetensors")
    assert "model.criterion.w" in tensors and any(k.startswith("optim.") for k in tensors)
    config = read_json(run / "config.json")
    assert config["effective_batch"] == 16 and config["negatives_per_loss"] == 8
    assert config["negatives_per_loss_official"] == 8 and config["negatives"].startswith("global")
    summary = read_json(run / "run.json")
    assert summary["ranks_in_sync"] and summary["steps"] == 1
    from clip2point.models.encoders import read_depth_encoder_meta

    assert read_depth_encoder_meta(run / "depth_encoder.safetensors")["model"] == TINY
    (folder / "state.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="state.safetensors"):
        T.pretrain(_config(pairs16, run, tmp_path, epochs=2, accumulate=2, optimizer="adamw", lr=1e-4, resume=True))


def test_image_feature_cache_gives_the_same_training_as_the_image_encoder(pairs16, tmp_path):
    with_cache = T.pretrain(_config(pairs16, tmp_path / "c", tmp_path, epochs=1, optimizer="adamw", lr=1e-4))
    without = T.pretrain(_config(pairs16, tmp_path / "n", tmp_path, epochs=1, optimizer="adamw", lr=1e-4,
                                 cache_image_features=False))
    assert without.steps == with_cache.steps == 2
    # The cache stores float16 features: the losses agree to about 1e-3.
    for key in ("loss", "loss_intra", "loss_cross"):
        assert without.last[key] == pytest.approx(with_cache.last[key], abs=5e-3)
    assert not read_json(tmp_path / "n/config.json")["image_feature_cache"]["enabled"]


def test_epoch_batches_shard_ranks_and_skip_on_resume():
    shards = [B.EpochBatches(10, 2, world_size=3, rank=r, seed=1) for r in range(3)]
    for s in shards:
        s.set_epoch(4)
    seen = [i for s in shards for b in s for i in b]
    assert len(seen) == 12 and set(seen) == set(range(10))  # padded to 4 per rank, like DistributedSampler
    assert all(len(s) == 2 for s in shards)
    one = B.EpochBatches(10, 4, seed=1)
    one.set_epoch(0)
    full = list(one)
    one.set_epoch(0, start=1)
    assert list(one) == full[1:]
    one.set_epoch(1)
    assert list(one) != full
    with pytest.raises(UsageError, match="fewer than 2"):
        B.EpochBatches(3, 8, world_size=3)


def test_defaults_are_the_official_pretraining():
    """pretraining.py: Lamb(model.parameters(), lr=6e-3, weight_decay=1e-4) on every trained
    parameter (1-D ones and the balance weight w included), cosine floor 1e-5, 10-view validation."""
    from torch import nn

    from clip2point.training.lamb import Lamb

    cfg = T.PretrainConfig(data="d", out="o").resolved()
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.min_lr, cfg.val_views) == ("lamb", 6e-3, 1e-4, pytest.approx(1e-5), 10)
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    model[1].weight.requires_grad_(False)  # frozen parameters are not handed over (the image tower)
    opt = T.build_optimizer(model, cfg)
    assert isinstance(opt, Lamb) and len(opt.param_groups) == 1
    group = opt.param_groups[0]
    assert group["weight_decay"] == 1e-4 and group["lr"] == 6e-3
    assert {id(p) for p in group["params"]} == {id(p) for p in model.parameters() if p.requires_grad}
    adamw = T.build_optimizer(model, T.PretrainConfig(data="d", out="o", optimizer="adamw").resolved())
    assert [g["weight_decay"] for g in adamw.param_groups] == [0.05, 0.0]


def test_config_validation():
    with pytest.raises(UsageError, match="optimizer"):
        T.PretrainConfig(data="d", out="o", optimizer="sgd").resolved()
    with pytest.raises(UsageError, match="batch_size"):
        T.PretrainConfig(data="d", out="o", batch_size=1).resolved()
    lamb = T.PretrainConfig(data="d", out="o", optimizer="lamb").resolved()
    assert (lamb.lr, lamb.weight_decay, lamb.min_lr) == (6e-3, 1e-4, pytest.approx(1e-5))


def test_pretrain_cli_writes_a_depth_encoder_that_classify_loads(pairs16, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    args = ["pretrain", pairs16, run, "-m", TINY, "--pretrained", "none", "--epochs", "1", "-b", "8",
            "--device", "cpu", "--workers", "0", "--render-backend", "torch",
            "--feature-cache-dir", tmp_path / "features"]
    result = run_c2p(args, capsys, monkeypatch)
    assert result.code == 0, result.err
    assert "16 pairs" in result.err and "depth_encoder.safetensors" in result.err
    again = run_c2p(args, capsys, monkeypatch)
    assert again.code == 2 and "--resume" in again.err
    shape = next(p for p in (pairs16).iterdir() if p.is_dir()) / "points.npy"
    result = run_c2p(["classify", shape, "-m", TINY, "--pretrained", "none", "--labels", "cube,chair",
                      "--depth-encoder", run / "depth_encoder.safetensors", "-o", tmp_path / "out.json"],
                     capsys, monkeypatch)
    assert result.code == 0, result.err
    assert (tmp_path / "out.json").is_file()
    # the run folder stands for its depth_encoder.safetensors, with the same weights id
    by_folder = run_c2p(["classify", shape, "-m", TINY, "--pretrained", "none", "--labels", "cube,chair",
                         "--depth-encoder", run, "-o", tmp_path / "out2.json"], capsys, monkeypatch)
    assert by_folder.code == 0, by_folder.err
    meta = [json.loads(p.read_text())["meta"] for p in (tmp_path / "out.json", tmp_path / "out2.json")]
    assert meta[0]["depth_encoder_id"] == meta[1]["depth_encoder_id"] is not None
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = run_c2p(["classify", shape, "-m", TINY, "--pretrained", "none", "--labels", "cube,chair",
                   "--depth-encoder", empty], capsys, monkeypatch)
    assert bad.code == 1 and "depth_encoder.safetensors" in bad.err


def test_the_last_step_of_an_epoch_weighs_its_micro_batches_evenly(pairs16, tmp_path, monkeypatch):
    # 16 pairs, batch 2, accumulate 3: 8 micro-batches in steps of 3, 3 and 2.
    assert [B.micro_batches_in_step(b, 8, 3) for b in range(8)] == [3, 3, 3, 3, 3, 3, 2, 2]
    assert [B.micro_batches_in_step(b, 6, 4) for b in range(6)] == [4, 4, 4, 4, 2, 2]
    weights = []
    forward = T.BalancedPretrainLoss.forward

    def recording_forward(self, *args):
        out = forward(self, *args)
        out["loss"].register_hook(lambda g: weights.append(round(float(g), 6)))
        return out

    monkeypatch.setattr(T.BalancedPretrainLoss, "forward", recording_forward)
    result = T.pretrain(_config(pairs16, tmp_path / "run", tmp_path, epochs=1, batch_size=2, accumulate=3, n_points=256))
    assert result.steps == 3
    assert weights == [round(1 / 3, 6)] * 6 + [0.5, 0.5]


def test_resume_refuses_another_world_size_or_schedule(pairs16, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    kw = dict(epochs=1, batch_size=8, n_points=256)
    T.pretrain(_config(pairs16, run, tmp_path, **kw))
    state_file = latest_checkpoint(run) / "state.json"
    assert read_json(state_file)["world_size"] == 1
    for change, pattern in ((dict(restart_epochs=3), r"restart_epochs 2 \(now 3\)"),
                            (dict(lr=1e-3), r"(?<!min_)lr 0.006 \(now 0.001\)"), (dict(min_lr=1e-6), r"min_lr \S+ \(now 1e-06\)")):
        with pytest.raises(UsageError, match=pattern):
            T.pretrain(_config(pairs16, run, tmp_path, resume=True, **{**kw, "epochs": 2, **change}))
    # The library names the option; the command names its flag.
    cli = run_c2p(["pretrain", pairs16, run, "-m", TINY, "--pretrained", "none", "--epochs", "2", "-b", "8",
                   "--points", "256", "--device", "cpu", "--resume", "--restart-epochs", "3"], capsys, monkeypatch)
    assert cli.code == 2 and "--restart-epochs 2 (now 3)" in cli.err, cli.err
    state = read_json(state_file)
    state["world_size"] = 2  # as if the run had been started under torchrun with 2 processes
    state_file.write_text(json.dumps(state))
    with pytest.raises(UsageError, match=r"world size \(processes\) 2 \(now 1\)"):
        T.pretrain(_config(pairs16, run, tmp_path, resume=True, **{**kw, "epochs": 2}))
    state["world_size"] = 1
    state_file.write_text(json.dumps(state))
    resumed = T.pretrain(_config(pairs16, run, tmp_path, resume=True, **{**kw, "epochs": 2}))
    assert resumed.steps == 4 and resumed.epochs_done == 2


def test_a_run_skips_and_reports_models_with_unreadable_files(pairs16, tmp_path, capsys, monkeypatch):
    import shutil

    data = tmp_path / "pairs"
    shutil.copytree(pairs16, data)
    bad = sorted(p for p in data.iterdir() if p.is_dir())[0]
    (bad / "view_3.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    result = run_c2p(["pretrain", data, tmp_path / "run", "-m", TINY, "--pretrained", "none", "--epochs", "1",
                      "-b", "8", "--points", "256", "--device", "cpu", "--workers", "0", "--render-backend", "torch",
                      "--feature-cache-dir", tmp_path / "features"], capsys, monkeypatch)
    assert result.code == 0, result.err
    assert "15 pairs" in result.err and "skipped 1 model(s)" in result.err and "view_3.png" in result.err
    config = read_json(tmp_path / "run/config.json")["pairs"]
    assert config["models"] == 15 and config["skipped"] == 1
    assert "view_3.png: not a readable image" in config["skipped_models"][0]["problem"]


def test_image_feature_shards_add_up_to_the_whole_table(pairs16):
    """Ranks split the cache building into interleaved shares and sum their tables."""
    import torch

    from clip2point.models.encoders import load_clip

    index = open_pairs(pairs16)
    visual = load_clip(TINY, "none").model.visual
    whole = IF.compute_image_features(visual, index, torch.device("cpu"), batch_size=32)
    parts = [IF.compute_image_features(visual, index, torch.device("cpu"), batch_size=32, shard=(k, 3)) for k in range(3)]
    assert whole.shape == (16, 10, whole.shape[2]) and whole.abs().sum(-1).min() > 0
    for k, part in enumerate(parts):  # each share fills only its own renders
        filled = part.abs().sum(-1) > 0
        assert filled.flatten().nonzero().flatten().tolist() == list(range(k, 160, 3))
    torch.testing.assert_close(sum(p.float() for p in parts), whole.float(), atol=2e-3, rtol=2e-3)
