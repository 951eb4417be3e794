"""Forged run folders and checkpoints: every field checked before use, one
error naming the file and the field, nothing allocated from an absurd size, resume only inside
the run folder."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from clip2point.errors import CheckpointError
from clip2point.store.checkpoints import load_tensors, save_tensors
from clip2point.store.run_files import (
    FEWSHOT_STATE,
    PRETRAIN_STATE,
    RunFileError,
    check_fewshot_config,
    check_fields,
    check_rng_tensors,
    checkpoint_folder,
)
from tests.cli_helpers import run_c2p

GOOD_CONFIG = {
    "format": "clip2point-fewshot-run", "labels": ["cube", "cone"], "templates": ["image of a {}"],
    "model": "c2p-tiny", "pretrained": "none", "weights_id": "c2p-tiny/none", "depth_encoder": None,
    "depth_encoder_sha256": None, "fold": True, "fusion": "gated", "dropout": 0.075, "normalize_views": False,
    "num_views": 10, "views": [[0, 0]] * 10, "dim": 64, "logit_scale": 100.0, "image_size": 224, "radius": 0.02,
    "dataset": {"n_points": 1024, "sampling": "random", "up": "z"},
}


@pytest.mark.parametrize("change,field,problem", [
    ({"num_views": 200000}, "num_views", "between 1 and 64, got 200000"),
    ({"image_size": 20000}, "image_size", "between 16 and 1024, got 20000"),
    ({"labels": "cube,cone"}, "labels", "must be a list"),
    ({"labels": []}, "labels", "must hold 1 to"),
    ({"labels": ["cube", 3]}, "labels[1]", "must be text"),
    ({"fusion": "max"}, "fusion", "must be one of gated, mean"),
    ({"num_views": "10"}, "num_views", "whole number"),
    ({"num_views": True}, "num_views", "whole number"),
    ({"radius": math.nan}, "radius", "must be a number"),
    ({"logit_scale": 0.0}, "logit_scale", "above 0.0"),
    ({"views": [[0, 0]] * 9}, "views", "lists 9 views but num_views is 10"),
    ({"dataset": {"n_points": 10**12}}, "dataset.n_points", "between 1 and"),
    ({"dataset": {"up": "x"}}, "dataset.up", "must be one of z, y"),
    ({"depth_encoder_sha256": "abc"}, "depth_encoder_sha256", "unexpected form"),
])
def test_bad_config_fields_are_named(tmp_path, change, field, problem):
    path = tmp_path / "config.json"
    with pytest.raises(RunFileError) as caught:
        check_fewshot_config({**GOOD_CONFIG, **change}, path)
    assert caught.value.field == field and problem in str(caught.value)
    assert str(caught.value).startswith(f"{path}: {field}: ")
    assert isinstance(caught.value, CheckpointError)


def test_missing_fields_and_a_good_config(tmp_path):
    path = tmp_path / "config.json"
    assert check_fewshot_config(dict(GOOD_CONFIG), path)["num_views"] == 10
    for required in ("labels", "model", "fusion", "num_views", "weights_id"):
        broken = {k: v for k, v in GOOD_CONFIG.items() if k != required}
        with pytest.raises(RunFileError, match=f"{required}: missing"):
            check_fewshot_config(broken, path)
    with pytest.raises(RunFileError, match="must be a JSON object"):
        check_fewshot_config([1, 2], path)


def test_state_files(tmp_path):
    state = {"epoch": 3, "best": {"epoch": 2, "val_acc": 0.5, "val_loss": math.inf},
             "optimizer": {"param_groups": [{"lr": 0.001}], "scalars": {}}}
    check_fields(tmp_path / "state.json", state, FEWSHOT_STATE)
    with pytest.raises(RunFileError, match="epoch: must be a whole number"):
        check_fields(tmp_path / "state.json", {**state, "epoch": 1.5}, FEWSHOT_STATE)
    pre = {"format": "c2p-pretrain-checkpoint", "step": 4, "epoch": 1, "optimizer": {"param_groups": [{}]},
           "scheduler": {}}
    check_fields(tmp_path / "state.json", pre, PRETRAIN_STATE)
    with pytest.raises(RunFileError, match=r"state\.json: step: missing"):
        check_fields(tmp_path / "state.json", {k: v for k, v in pre.items() if k != "step"}, PRETRAIN_STATE)
    good = {"rng.torch": torch.get_rng_state(), "rng.shuffle": torch.Generator().get_state()}
    check_rng_tensors(good, tmp_path / "s.safetensors", ["rng.torch", "rng.shuffle", "rng.cuda"])
    with pytest.raises(RunFileError, match="rng.torch: must be a 1-D uint8 RNG state, got torch.float32"):
        check_rng_tensors({**good, "rng.torch": good["rng.torch"].float()}, tmp_path / "s.safetensors", ["rng.torch"])
    with pytest.raises(RunFileError, match="rng.shuffle: must hold"):
        check_rng_tensors({**good, "rng.shuffle": good["rng.shuffle"][:10]}, tmp_path / "s.safetensors", ["rng.shuffle"])


def test_latest_json_may_only_name_a_checkpoint_of_the_run(tmp_path):
    root = tmp_path / "run" / "checkpoints"
    (root / "step-00000004").mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    assert checkpoint_folder(root) is None
    (root / "latest.json").write_text(json.dumps({"path": "step-00000004"}))
    assert checkpoint_folder(root) == root / "step-00000004"
    for forged in ("../../elsewhere", str(outside), "step-1/../../../elsewhere", 7):
        (root / "latest.json").write_text(json.dumps({"path": forged}))
        with pytest.raises(RunFileError, match="latest.json: path: "):
            checkpoint_folder(root)
    (root / "step-00000009").symlink_to(outside)  # a link leading out of the run
    (root / "latest.json").write_text(json.dumps({"path": "step-00000009"}))
    with pytest.raises(RunFileError, match="leads outside"):
        checkpoint_folder(root)


# --- through the entry points: a forged run is refused before any model is built ----------------


def _run_folder(tmp_path, **change):
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    (run / "config.json").write_text(json.dumps({**GOOD_CONFIG, **change}))
    return run


def test_classify_and_eval_with_a_forged_run_fail_with_one_line(tmp_path, monkeypatch, capsys):
    from clip2point.models import encoders
    from clip2point.models.adapters import load_adapter_classifier, load_run_adapter

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded from a forged config")

    monkeypatch.setattr(encoders, "load_clip", no_model)
    cli_monkeypatch = monkeypatch
    for change, needle in (({"num_views": 200000}, "num_views"), ({"image_size": 20000}, "image_size"),
                           ({"labels": None}, "labels")):
        run = _run_folder(tmp_path, **change)
        with pytest.raises(RunFileError, match=f"config.json: {needle}: "):
            load_run_adapter(run)
        with pytest.raises(RunFileError, match=f"config.json: {needle}: "):
            load_adapter_classifier(run, device="cpu")

    run = _run_folder(tmp_path, num_views=200000)
    (tmp_path / "scan.npy").write_bytes(b"")
    for args in (["classify", tmp_path / "scan.npy", "--adapter", run, "--device", "cpu"],
                 ["eval", tmp_path, "--adapter", run, "--out", tmp_path / "report", "--device", "cpu"]):
        result = run_c2p(args, capsys, cli_monkeypatch)
        assert result.code == 1, result.err
        assert "config.json: num_views: must be between 1 and 64, got 200000" in result.err
        assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1


def test_fewshot_resume_refuses_a_state_without_its_fields_or_with_a_float_rng(tmp_path):
    from clip2point.models.adapters import DualPathAdapter
    from clip2point.training.adapter_trainer import train_adapter
    from clip2point.training.features import FeatureSet

    g = torch.Generator().manual_seed(0)
    feats = FeatureSet(torch.randn(8, 10, 16, generator=g), torch.randn(8, 10, 16, generator=g),
                       torch.arange(8) % 2, list(range(8)), [str(i) for i in range(8)])

    def adapter():
        return DualPathAdapter(10, 16, torch.nn.functional.normalize(torch.randn(2, 16), dim=-1), 10.0)

    kw = {"epochs": 1, "batch_size": 4, "select": "val"}
    train_adapter(adapter(), feats, feats, tmp_path, **kw)
    kw["epochs"] = 2
    state = json.loads((tmp_path / "state.json").read_text())
    (tmp_path / "state.json").write_text(json.dumps({k: v for k, v in state.items() if k != "epoch"}))
    with pytest.raises(RunFileError, match=r"state\.json: epoch: missing"):
        train_adapter(adapter(), feats, feats, tmp_path, resume=True, **kw)
    del state["best"]["val_acc"]
    (tmp_path / "state.json").write_text(json.dumps(state))
    with pytest.raises(RunFileError, match=r"best\.val_acc: missing"):
        train_adapter(adapter(), feats, feats, tmp_path, resume=True, **kw)
    state["best"]["val_acc"] = 0.5
    (tmp_path / "state.json").write_text(json.dumps(state))
    tensors = load_tensors(tmp_path / "state.safetensors")
    save_tensors(tmp_path / "state.safetensors", {**tensors, "rng.torch": tensors["rng.torch"].float()})
    with pytest.raises(RunFileError, match="rng.torch: must be a 1-D uint8"):
        train_adapter(adapter(), feats, feats, tmp_path, resume=True, **kw)
    save_tensors(tmp_path / "state.safetensors", tensors)
    assert train_adapter(adapter(), feats, feats, tmp_path, resume=True, **kw).history[-1]["epoch"] == 2


def test_pretrain_resume_reads_only_checked_state_inside_the_run(tmp_path):
    from clip2point.training import pretrain as T
    from clip2point.training.pretrain_checkpoints import latest_checkpoint
    from tests.pretrain_helpers import TINY, make_pairs, one_thread

    with one_thread():
        pairs = make_pairs(tmp_path / "pairs", ["cube", "sphere"], per_class=2, n_points=256)
        run = tmp_path / "run"
        kw = dict(data=str(pairs), out=str(run), model=TINY, pretrained="none", epochs=1, batch_size=2,
                  n_points=128, device="cpu", render_backend="torch", feature_cache_dir=str(tmp_path / "f"))
        T.pretrain(T.PretrainConfig(**kw))
        folder = latest_checkpoint(run)
        latest = run / "checkpoints" / "latest.json"
        resume = T.PretrainConfig(**{**kw, "epochs": 2, "resume": True})

        outside = tmp_path / "outside"
        outside.mkdir()
        latest.write_text(json.dumps({"path": "../../outside"}))
        with pytest.raises(RunFileError, match="latest.json: path: "):
            T.pretrain(resume)
        latest.write_text(json.dumps({"path": folder.name}))

        state = json.loads((folder / "state.json").read_text())
        (folder / "state.json").write_text(json.dumps({k: v for k, v in state.items() if k != "step"}))
        with pytest.raises(RunFileError, match=r"state\.json: step: missing"):
            T.pretrain(resume)
        (folder / "state.json").write_text(json.dumps(state))

        tensors = load_tensors(folder / "state.safetensors")
        save_tensors(folder / "state.safetensors", {**tensors, "rng.torch": tensors["rng.torch"].double()})
        with pytest.raises(RunFileError, match="rng.torch: must be a 1-D uint8"):
            T.pretrain(resume)
        save_tensors(folder / "state.safetensors", tensors)
        assert T.pretrain(resume).epochs_done == 2


@pytest.mark.parametrize("change, rows, width, message", [
    ({"labels": ["cube", "cone", "torus"]}, 2, 64, "best.safetensors: text_features: holds 2 classes, but config.json lists 3 labels"),
    ({}, 2, 32, "best.safetensors: text_features: holds 32-wide features, but config.json says dim 64"),
    ({"model": "../../etc/passwd"}, 2, 64, "config.json: unknown model '../../etc/passwd'"),
])  # fmt: skip
def test_run_files_that_do_not_fit_each_other_name_the_file(tmp_path, monkeypatch, capsys, change, rows, width, message):
    from tests.hostile_helpers import assert_one_line, tree_state

    run = _run_folder(tmp_path, **change)
    save_tensors(run / "best.safetensors", {"text_features": torch.zeros(rows, width)})
    (tmp_path / "scans" / "cube").mkdir(parents=True)
    np.save(tmp_path / "scans" / "cube" / "a.npy", np.random.default_rng(0).normal(size=(64, 3)))
    before = tree_state(tmp_path)
    for args in (["classify", tmp_path / "scans", "-r", "--adapter", run, "--device", "cpu", "-o", tmp_path / "rows.jsonl"],
                 ["eval", tmp_path / "scans", "--adapter", run, "--out", tmp_path / "report", "--device", "cpu"]):  # fmt: skip
        r = run_c2p(args, capsys, monkeypatch)
        assert r.code == 1, r.err
        # (eval says which dataset it read first)
        assert_one_line(r.err.strip().splitlines()[-1], f"error: {run / message.split(':')[0]}{message[message.index(':'):]}")
        assert "Traceback" not in r.err and r.err.count("error:") == 1
    after = tree_state(tmp_path)
    assert {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)} <= {"report"}  # eval's own folder
    assert not any((tmp_path / "report").iterdir())
