"""Few-shot training: the acceptance run on synthetic shapes, bit-exact checkpoints, resume, the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from clip2point.errors import CheckpointError, UsageError
from clip2point.models.adapters import DualPathAdapter, load_adapter_classifier, load_run_adapter
from clip2point.store.checkpoints import load_tensors
from clip2point.training.adapter_trainer import evaluate_features, train_adapter
from clip2point.training.features import FeatureSet
from clip2point.training.fewshot import FewShotOptions, run_fewshot

V, D, K = 10, 16, 4
CLASSES = ["cube", "sphere", "cone", "torus", "chair"]


def _random_features(n: int, seed: int) -> FeatureSet:
    """Class-dependent random per-view features (a learnable problem, no rendering needed)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(K, 1, D, generator=torch.Generator().manual_seed(123))
    targets = torch.arange(n) % K
    depth = centres[targets] + 0.8 * torch.randn(n, V, D, generator=g)
    clip = centres[targets].flip(-1) + 0.8 * torch.randn(n, V, D, generator=g)
    return FeatureSet(depth, clip, targets, list(range(n)), [f"s{i}" for i in range(n)])


def _adapter(seed: int, fusion: str = "gated") -> DualPathAdapter:
    torch.manual_seed(seed)
    text = torch.nn.functional.normalize(torch.randn(K, D), dim=-1)
    return DualPathAdapter(V, D, text, 10.0, fusion)


class _Killed(Exception):
    pass


def _metrics(run) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "time_s"} for r in rows]


@pytest.mark.parametrize("save_every", [1, 2])
def test_resume_after_a_kill_ends_bit_identical(tmp_path, save_every):
    train, val = _random_features(38, 0), _random_features(12, 1)
    kw = {"epochs": 6, "batch_size": 8, "seed": 3, "select": "val"}

    straight = tmp_path / "straight"
    result = train_adapter(_adapter(0), train, val, straight, **kw)
    kw["save_every"] = save_every  # with 2, the kill after epoch 3 loses epoch 3: it is redone
    assert result.best["epoch"] >= 1 and len(result.history) == 6

    def kill_after_3(event):
        if event.kind == "epoch" and event.done == 3:
            raise _Killed

    killed = tmp_path / "killed"
    with pytest.raises(_Killed):
        train_adapter(_adapter(0), train, val, killed, on_event=kill_after_3, **kw)
    # A line for an epoch whose state was never saved (killed mid-epoch) must be dropped on resume.
    with open(killed / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 4, "loss": 9.9}) + "\n")
    # A different initialisation proves that resume restores the saved weights, not a re-seeded init.
    assert json.loads((killed / "state.json").read_text())["epoch"] == 3 // save_every * save_every
    train_adapter(_adapter(99), train, val, killed, resume=True, **kw)

    for name in ("last", "best"):
        a, b = load_tensors(straight / f"{name}.safetensors"), load_tensors(killed / f"{name}.safetensors")
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert _metrics(straight) == _metrics(killed)
    assert json.loads((straight / "state.json").read_text())["best"] == json.loads((killed / "state.json").read_text())["best"]
    assert not torch.equal(load_tensors(straight / "last.safetensors")["path1.fc1.weight"], _adapter(0).path1.fc1.weight)


def test_checkpoint_reloads_bit_exactly(tmp_path):
    adapter = _adapter(0, "mean")
    train_adapter(adapter, _random_features(20, 0), None, tmp_path, epochs=2, batch_size=8, select="last")
    saved = load_tensors(tmp_path / "last.safetensors")
    state = adapter.state_dict()
    assert saved.keys() == state.keys()
    assert all(torch.equal(saved[k], state[k]) for k in state)
    fresh = _adapter(5, "mean")
    fresh.load_state_dict(saved)
    feats = _random_features(9, 4)
    assert torch.equal(evaluate_features(fresh, feats)[2], evaluate_features(adapter, feats)[2])
    with torch.no_grad():
        assert torch.equal(fresh.eval()(feats.depth, feats.clip), adapter.eval()(feats.depth, feats.clip))


def test_training_learns_random_class_features(tmp_path):
    adapter = _adapter(0)
    train_adapter(adapter, _random_features(64, 0), None, tmp_path, epochs=15, batch_size=16, select="last")
    _, acc, _ = evaluate_features(adapter, _random_features(40, 7))
    assert acc >= 0.9  # chance is 0.25


# --- the acceptance run on synthetic shapes ---------------------------------------------------


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    from clip2point.synth import write_dataset

    root = tmp_path_factory.mktemp("synth5")
    # Clean meshes (ModelNet-like .off), 16 training and 10 test shapes per class.
    write_dataset(root, classes=CLASSES, per_class=16, test_per_class=10, fmt="off", seed=0)
    return root


@pytest.fixture(scope="module")
def trained_run(synth_root, tmp_path_factory, tiny_model_name):
    out = tmp_path_factory.mktemp("runs") / "run"
    cache = tmp_path_factory.mktemp("feature-cache")
    opts = FewShotOptions(
        shots=16, epochs=30, model=tiny_model_name, pretrained="none", n_points=1024, device="cpu",
        select="last", cache_dir=str(cache), seed=0,
    )
    summary = run_fewshot(synth_root, out, opts)
    return out, summary, opts


@pytest.mark.slow
def test_fewshot_beats_chance_and_zero_shot_on_synthetic_shapes(trained_run, synth_root, tiny_model_name):
    from clip2point.evaluate import evaluate_classifier
    from clip2point.models.classifier import load_classifier
    from clip2point.training.datasets import open_dataset

    run, summary, _ = trained_run
    fewshot_acc = summary["test"]["best"]["top1"]
    test_ds = open_dataset(synth_root, split="test", n_points=1024)
    zero = load_classifier(labels=test_ds.labels, model=tiny_model_name, pretrained="none", views=10, device="cpu")
    zero_acc = evaluate_classifier(zero, test_ds, list(range(len(CLASSES))))["top1"]
    # Chance is 0.2; an untrained adapter (or a loop that does not update it) stays near it.
    assert fewshot_acc >= 0.6, summary["test"]
    assert fewshot_acc >= zero_acc + 0.3, (fewshot_acc, zero_acc)

    # The classify path (render -> both encoders -> adapter) agrees with the cached-feature path.
    clf = load_adapter_classifier(run, device="cpu")
    report = evaluate_classifier(clf, test_ds, list(range(len(CLASSES))))
    assert abs(report["top1"] - fewshot_acc) <= 1.0 / len(test_ds)
    assert clf.labels == CLASSES and clf.meta["fusion"] == "gated"


def test_run_folder_contents(trained_run, tiny_model_name):
    import clip2point

    run, summary, _ = trained_run
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["labels"] == CLASSES and cfg["fusion"] == "gated" and cfg["num_views"] == 10
    assert cfg["model"] == tiny_model_name and cfg["version"] == clip2point.__version__
    assert cfg["templates"] == ["image of a {}"]
    assert any("depth path starts from CLIP" in w for w in cfg["warnings"])
    shots = json.loads((run / "shots.json").read_text())
    assert {k: len(v) for k, v in shots["train"].items()} == dict.fromkeys(CLASSES, 16)
    assert all(sid.startswith(f"train/{c}/") for c, ids in shots["train"].items() for sid in ids)
    assert len(_metrics(run)) == 30 and summary["best_epoch"] == 30
    # Rebuilt from config + safetensors, the adapter holds exactly the saved weights.
    adapter = load_run_adapter(run, "last").adapter
    saved = load_tensors(run / "last.safetensors")
    assert all(torch.equal(adapter.state_dict()[k], saved[k]) for k in saved)


def test_feature_cache_is_reused_and_runs_are_protected(trained_run, synth_root, tmp_path):
    run, summary, opts = trained_run
    assert summary["feature_cache_hit"] is False
    opts2 = FewShotOptions(**{**opts.__dict__, "epochs": 1, "eval_test": False})
    again = run_fewshot(synth_root, tmp_path / "again", opts2)
    assert again["feature_cache_hit"] is True
    with pytest.raises(UsageError, match="already holds a few-shot run"):
        run_fewshot(synth_root, tmp_path / "again", opts2)
    with pytest.raises(UsageError, match="cannot resume with different options: seed"):
        run_fewshot(synth_root, tmp_path / "again", FewShotOptions(**{**opts2.__dict__, "seed": 1}), resume=True)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        run_fewshot(synth_root, tmp_path / "fresh", opts2, resume=True)


def test_fewshot_cli(synth_root, tmp_path, tiny_model_name):
    from typer.testing import CliRunner

    from clip2point.app import app

    out = tmp_path / "cli-run"
    args = ["fewshot", str(synth_root), "--out", str(out), "--shots", "4", "--model", tiny_model_name,
            "--pretrained", "none", "--points", "256", "--device", "cpu", "--no-cache", "--no-test", "--fusion", "mean"]
    result = CliRunner().invoke(app, [*args, "--epochs", "3"])
    assert result.exit_code == 0, result.output
    assert "best epoch" in result.output
    assert {p.name for p in out.iterdir()} >= {"config.json", "shots.json", "metrics.jsonl", "best.safetensors",
                                               "last.safetensors", "state.json", "state.safetensors", "summary.json"}
    shots = json.loads((out / "shots.json").read_text())
    assert all(len(shots["train"][c]) + len(shots["val"][c]) == 4 for c in CLASSES)
    resumed = CliRunner().invoke(app, [*args, "--epochs", "4", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert len(_metrics(out)) == 4


# --- input checks: resume identity, shots, unreadable shots, options, --out -----------------------


def _small_synth(root, per_class=5):
    from clip2point.synth import write_dataset

    write_dataset(root, classes=CLASSES[:3], per_class=per_class, test_per_class=1, fmt="npy", n_points=128, seed=0)
    return root


def _quick_opts(tiny_model_name, **kw) -> FewShotOptions:
    base = {"shots": 3, "epochs": 1, "batch_size": 4, "model": tiny_model_name, "pretrained": "none", "n_points": 64,
            "device": "cpu", "use_cache": False, "eval_test": False, "select": "val", "val_fraction": 0.34}
    return FewShotOptions(**{**base, **kw})


def test_batch_size_one_is_a_usage_error():
    with pytest.raises(UsageError, match="batch_size must be at least 2"):
        FewShotOptions(batch_size=1).check()


def test_out_that_is_a_file_is_a_usage_error(tmp_path, tiny_model_name):
    afile = tmp_path / "afile"
    afile.write_text("x")
    # Refused before any data or model is read: the dataset folder does not even exist.
    with pytest.raises(UsageError, match="is a file"):
        run_fewshot(tmp_path / "no-data", afile, _quick_opts(tiny_model_name))


def test_resume_keeps_the_shots_of_shots_json(tmp_path, tiny_model_name):
    import shutil

    data = _small_synth(tmp_path / "data")
    run = tmp_path / "run"
    run_fewshot(data, run, _quick_opts(tiny_model_name))
    before = (run / "shots.json").read_text()
    for c in CLASSES[:3]:  # new files change every class's member list (a re-sampling would move shots)
        for i in range(6, 10):
            shutil.copy(data / "train" / c / f"{c}_0001.npy", data / "train" / c / f"{c}_{i:04d}.npy")
    summary = run_fewshot(data, run, _quick_opts(tiny_model_name, epochs=2), resume=True)
    assert (run / "shots.json").read_text() == before
    assert summary["train_samples"] == 6 and len(_metrics(run)) == 2
    gone = json.loads(before)["train"]["cube"][0]
    (data / gone).unlink()
    with pytest.raises(CheckpointError, match=f"shot '{gone}' is no longer in the dataset"):
        run_fewshot(data, run, _quick_opts(tiny_model_name, epochs=3), resume=True)


def test_resume_compares_the_depth_encoder_by_content_not_path(tmp_path, tiny_model_name, monkeypatch):
    from clip2point.models.encoders import build_depth_encoder, load_clip, save_depth_encoder

    data = _small_synth(tmp_path / "data")
    encoder = build_depth_encoder(load_clip(tiny_model_name, "none"))
    save_depth_encoder(encoder, tmp_path / "enc.safetensors")
    run = tmp_path / "run"
    run_fewshot(data, run, _quick_opts(tiny_model_name, depth_encoder=str(tmp_path / "enc.safetensors")))
    monkeypatch.chdir(tmp_path)  # the same file, named by a relative path, continues the run
    run_fewshot(data, run, _quick_opts(tiny_model_name, epochs=2, depth_encoder="enc.safetensors"), resume=True)
    assert len(_metrics(run)) == 2
    with torch.no_grad():
        next(encoder.parameters()).add_(1.0)
    save_depth_encoder(encoder, tmp_path / "enc.safetensors")  # another file at the same path is refused
    with pytest.raises(UsageError, match=r"cannot resume with different options: depth encoder file"):
        run_fewshot(data, run, _quick_opts(tiny_model_name, epochs=3, depth_encoder="enc.safetensors"), resume=True)


def test_an_unreadable_drawn_shot_is_replaced_from_its_class(tmp_path, tiny_model_name):
    from clip2point.training.datasets import open_dataset
    from clip2point.training.shots import sample_shots

    data = _small_synth(tmp_path / "data")
    broken = "train/cube/cube_0000.ply"
    (data / broken).write_text("ply\nformat ascii 1.0\nelement vertex 5\n")
    ds = open_dataset(data, split="train", n_points=64)
    seed = next(s for s in range(100) if ds.sample_ids.index(broken) in sample_shots(ds.targets, ds.labels, 3, s, 0.34).all)
    run = tmp_path / "run"
    summary = run_fewshot(data, run, _quick_opts(tiny_model_name, seed=seed))
    assert [s["id"] for s in summary["skipped"]] == [broken] and "cube_0000.ply" in summary["skipped"][0]["error"]
    assert summary["shots_per_class"] == dict.fromkeys(CLASSES[:3], {"train": 2, "val": 1})
    shots = json.loads((run / "shots.json").read_text())
    assert all(len(shots["train"][c]) + len(shots["val"][c]) == 3 for c in CLASSES[:3])
    assert broken not in shots["train"]["cube"] + shots["val"]["cube"]


def test_feature_cache_key_changes_with_the_torch_and_open_clip_versions(tmp_path, monkeypatch):
    import importlib.metadata

    from clip2point.training.datasets import open_dataset
    from clip2point.training.features import RenderSettings, feature_cache_key

    ds = open_dataset(_small_synth(tmp_path / "data", per_class=2), split="train", n_points=64)
    args = (ds, range(len(ds)), {"clip": "m/none", "depth": "m/none"}, RenderSettings(10, 32, 0.02, 1))
    key = feature_cache_key(*args)
    assert feature_cache_key(*args) == key
    monkeypatch.setattr(torch, "__version__", "0.0.1")
    assert feature_cache_key(*args) != key
    monkeypatch.undo()
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.0.1" if name == "open_clip_torch" else real(name))
    assert feature_cache_key(*args) != key


# --- the official protocol: all shots train, --select last / val / test, per-epoch resampling ------


def test_resampled_features_are_drawn_per_epoch_and_resume_bit_identically(tmp_path):
    sets = [_random_features(30, seed) for seed in (0, 5, 9)]  # the same samples, three point sets each
    kw = {"epochs": 4, "batch_size": 8, "seed": 2, "select": "last"}
    from clip2point.training.adapter_trainer import AdapterTrainer

    trainer = AdapterTrainer(_adapter(0), sets, None, tmp_path / "probe", **kw)
    a, b = trainer.epoch_features(1), trainer.epoch_features(2)
    assert torch.equal(a.depth, trainer.epoch_features(1).depth)  # seeded by (seed, epoch): resume sees the same
    assert not torch.equal(a.depth, b.depth)
    for feats in (a, b):  # every sample takes one whole set (both paths from the same draw)
        for i in range(len(feats)):
            r = next(k for k, s in enumerate(sets) if torch.equal(s.depth[i], feats.depth[i]))
            assert torch.equal(feats.clip[i], sets[r].clip[i])

    straight = train_adapter(_adapter(0), sets, None, tmp_path / "straight", **kw)
    one_set = train_adapter(_adapter(0), sets[0], None, tmp_path / "one", **kw)
    assert straight.last["loss"] != one_set.last["loss"]

    def kill_after_2(event):
        if event.kind == "epoch" and event.done == 2:
            raise _Killed

    with pytest.raises(_Killed):
        train_adapter(_adapter(0), sets, None, tmp_path / "killed", on_event=kill_after_2, **kw)
    train_adapter(_adapter(7), sets, None, tmp_path / "killed", resume=True, **kw)
    x, y = load_tensors(tmp_path / "straight" / "last.safetensors"), load_tensors(tmp_path / "killed" / "last.safetensors")
    assert all(torch.equal(x[k], y[k]) for k in x)
    with pytest.raises(UsageError, match="same samples"):
        train_adapter(_adapter(0), [sets[0], _random_features(29, 1)], None, tmp_path / "bad", **kw)


def test_test_selection_keeps_the_first_best_test_epoch_and_says_so(tmp_path):
    from clip2point.training.adapter_trainer import SELECTION_NOTES

    test = _random_features(16, 3)
    result = train_adapter(_adapter(0), _random_features(24, 0), test, tmp_path, epochs=5, batch_size=8, select="test")
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    accs = [r["test_acc"] for r in rows]
    assert result.best["epoch"] == accs.index(max(accs)) + 1 and result.best["test_acc"] == max(accs)
    assert all(r["selection"] == SELECTION_NOTES["test"] for r in rows)
    assert SELECTION_NOTES["test"] == "the paper's protocol: epoch chosen on the test split (optimistic)"


def test_the_defaults_train_every_shot_and_keep_the_last_epoch(tmp_path, tiny_model_name):
    data = _small_synth(tmp_path / "data")
    opts = _quick_opts(tiny_model_name, epochs=2, select="last", val_fraction=0.25)
    assert FewShotOptions().select == "last" and FewShotOptions().resamples == 1
    summary = run_fewshot(data, tmp_path / "run", opts)
    assert summary["train_samples"] == 9 and summary["val_samples"] == 0 and summary["best_epoch"] == 2
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["normalize_views"] is False and cfg["loss_scale"] == 1.0 and cfg["probability_scale"] > 0
    assert cfg["selection"] == {"select": "last", "note": None}


def test_select_test_and_resamples_through_the_cli(tmp_path, tiny_model_name):
    from typer.testing import CliRunner

    from clip2point.app import app
    from clip2point.training.adapter_trainer import SELECTION_NOTES

    note = SELECTION_NOTES["test"]
    data = _small_synth(tmp_path / "data")
    out, cache = tmp_path / "run", tmp_path / "cache"
    args = ["fewshot", str(data), "--out", str(out), "--shots", "3", "--model", tiny_model_name, "--pretrained", "none",
            "--points", "64", "--device", "cpu", "--cache-dir", str(cache), "--epochs", "2", "-b", "4",
            "--select", "test", "--resamples", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert note in " ".join(result.output.split())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["selection"]["note"] == note and summary["test"]["selection"] == note
    assert summary["resamples"] == 2 and summary["best_test_acc"] == summary["test"]["best"]["top1"]
    assert json.loads((out / "config.json").read_text())["selection"]["note"] == note
    # Two point sets per training shot were encoded (and cached): 9 shots + 9 resampled + 3 test samples.
    assert len(list(cache.glob("*.safetensors"))) == 3
    report = tmp_path / "report"
    evaluated = CliRunner().invoke(app, ["eval", str(data), "--adapter", str(out), "--out", str(report),
                                         "--device", "cpu"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads((report / "report.json").read_text())["selection"] == note
    assert note in " ".join(evaluated.output.split())
