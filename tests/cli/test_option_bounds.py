"""Option bounds: each bad value is a usage error (exit 2, one line) found while
the command line is parsed, before any file is read or any model loads; adapter checkpoints honour
or refuse --model / --pretrained instead of ignoring them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.cli_helpers import run_c2p

TINY = ["--model", "c2p-tiny", "--pretrained", "none"]


@pytest.fixture()
def no_loading(monkeypatch):
    """Any attempt to load a model or read a point file fails the test loudly (exit 1, not 2)."""
    import clip2point.io
    import clip2point.models.classifier
    import clip2point.models.encoders
    import clip2point.training.datasets  # noqa: F401  (binds the real reader at import, before it is patched here)

    def forbidden(*args, **kwargs):
        raise AssertionError("loaded something before the options were checked")

    monkeypatch.setattr(clip2point.models.encoders, "load_clip", forbidden)
    monkeypatch.setattr(clip2point.models.classifier, "load_classifier", forbidden)
    monkeypatch.setattr(clip2point.io, "read_cloud", forbidden)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Path:
    """A small OFF mesh: the reader would sample --points points from its surface."""
    path = tmp_path_factory.mktemp("mesh") / "box.off"
    v = [(x, y, z) for x in (0, 1) for y in (0, 1) for z in (0, 1)]
    faces = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    lines = ["OFF", f"{len(v)} {len(faces)} 0", *(" ".join(map(str, p)) for p in v), *(f"4 {' '.join(map(str, f))}" for f in faces)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _usage_line(r, needle: str) -> None:
    assert r.code == 2, (r.code, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.err
    assert "Traceback" not in r.err


CASES = [
    (["classify", "{mesh}", "--workers", "1000"], "--workers must be between 0 and"),
    (["classify", "{mesh}", "--workers", "-1"], "--workers must be between 0 and"),
    (["classify", "{mesh}", "--points", "1000000000"], "--points must be between 1 and 1000000, got 1000000000"),
    (["render", "{mesh}", "--points", "1000000000"], "--points must be between 1 and 1000000"),
    (["classify", "{mesh}", "--seed", "-1"], "--seed must be between 0 and 4294967295, got -1"),
    (["render", "{mesh}", "--seed", "4294967296"], "--seed must be between 0 and"),
    (["classify", "{mesh}", "--points", "0"], "--points must be between 1"),
    (["classify", "{mesh}", "--batch-size", "0"], "--batch-size must be between 1"),
    (["classify", "{mesh}", "--top-k", "0"], "--top-k must be at least 1, got 0"),
    (["classify", "{mesh}", "--views", "0"], "--views must be one of"),
    (["render", "{mesh}", "--size", "0"], "--size must be between 16 and 2048"),
    (["fewshot", "{dir}", "-o", "{out}", "--shots", "0"], "--shots must be at least 1"),
    (["fewshot", "{dir}", "-o", "{out}", "--epochs", "0"], "--epochs must be between 1"),
    (["fewshot", "{dir}", "-o", "{out}", "--lr", "0"], "--lr must be greater than 0"),
    (["fewshot", "{dir}", "-o", "{out}", "--val-fraction", "1.5"], "--val-fraction must be between 0 and 0.9"),
    (["eval", "{dir}", "-o", "{out}", "--batch-size", "0"], "--batch-size must be between 1"),
    (["pretrain", "{dir}", "{out}", "--batch-size", "0"], "--batch-size must be between 1"),
    (["pretrain", "{dir}", "{out}", "--workers", "1000"], "--workers must be between 0 and"),
    (["pretrain", "{dir}", "{out}", "--accumulate", "0"], "--accumulate must be between 1"),
    (["export", "-o", "{out}", "--labels", "a,b", "--max-batch", "0"], "--max-batch must be between 1"),
    (["export", "-o", "{out}", "--labels", "a,b", "--points", "-5"], "--points must be between 1"),
    (["synth", "{out}", "--per-class", "-1"], "--per-class must be between 0"),
    (["make-pairs", "{dir}", "{out}", "--points", "0"], "--points must be between 1"),
]


@pytest.mark.parametrize("args,needle", CASES, ids=lambda x: " ".join(x) if isinstance(x, list) else None)
def test_bad_values_are_one_line_usage_errors_before_anything_loads(args, needle, mesh, tmp_path, capsys, monkeypatch, no_loading):
    filled = [a.format(mesh=mesh, dir=mesh.parent, out=tmp_path / "out") for a in args]
    _usage_line(run_c2p(filled, capsys, monkeypatch), needle)
    assert not (tmp_path / "out").exists()  # nothing was written either


def test_a_bad_value_from_an_environment_variable_says_where_it_came_from(mesh, capsys, monkeypatch, no_loading):
    monkeypatch.setenv("C2P_WORKERS", "1000")
    _usage_line(run_c2p(["classify", mesh], capsys, monkeypatch), "(from $C2P_WORKERS)")
    monkeypatch.setenv("C2P_BATCH_SIZE", "0")
    monkeypatch.delenv("C2P_WORKERS")
    _usage_line(run_c2p(["classify", mesh], capsys, monkeypatch), "--batch-size must be between 1 and 65536, got 0 (from $C2P_BATCH_SIZE)")


def test_workers_bound_scales_with_the_cores(monkeypatch):
    from clip2point import option_table as limits
    from clip2point.errors import OptionError

    monkeypatch.setattr(limits, "usable_cpus", lambda: 16)
    assert limits.max_workers() == 32
    limits.check_workers(32)
    limits.check_workers(None)
    with pytest.raises(OptionError, match=r"workers must be between 0 and 32 \(2 per usable CPU core, 16 here\), got 33"):
        limits.check_workers(33)
    monkeypatch.setattr(limits, "usable_cpus", lambda: 1)
    assert limits.max_workers() == limits.MIN_WORKER_CAP
    with pytest.raises(OptionError, match="n_points must be between 1 and 1000000"):
        limits.check_points(10**9)


def test_points_within_the_bound_still_work_on_a_mesh(mesh, tmp_path, capsys, monkeypatch):
    out = tmp_path / "v.png"
    r = run_c2p(["render", mesh, "--points", "20000", "-o", out], capsys, monkeypatch)
    assert r.code == 0 and out.exists(), r.err


# --- --adapter with --model / --pretrained ------------------------------------------------------------


def test_adapter_run_refuses_the_options_it_would_override(mesh, tmp_path, capsys, monkeypatch, no_loading):
    run = tmp_path / "run"
    run.mkdir()
    r = run_c2p(["classify", mesh, "--adapter", run, "--model", "ViT-L-14", "--pretrained", "openai"], capsys, monkeypatch)
    _usage_line(r, "brings its own model, labels, prompts and views: drop --model, --pretrained")
    r = run_c2p(["classify", mesh, "--adapter", run, "--labels", "a,b"], capsys, monkeypatch)
    _usage_line(r, "drop --labels")
    r = run_c2p(["eval", mesh.parent, "-o", tmp_path / "rep", "--adapter", run, "--model", "ViT-L-14"], capsys, monkeypatch)
    _usage_line(r, "drop --model")
    monkeypatch.setenv("C2P_MODEL", "ViT-L-14")  # a machine-wide default is not a contradiction
    r = run_c2p(["classify", mesh, "--adapter", run], capsys, monkeypatch)
    assert r.code == 1 and "drop" not in r.err and "config.json" in r.err  # went on to read the (empty) run


def test_official_checkpoint_honours_model_pretrained_and_labels(mesh, tmp_path, capsys, monkeypatch):
    """An official CLIP2Point few-shot checkpoint holds only adapter weights: the CLIP it runs with
    comes from --model / --pretrained (before: always ViT-B-32/openai, whatever was given)."""
    import torch

    from clip2point.models.encoders import load_clip
    from tests.models.test_adapters import V, _TheirSimplifiedAdapter

    bundle = load_clip("c2p-tiny", "none")
    torch.manual_seed(3)
    visual = bundle.model.visual.state_dict()
    dim = bundle.model.visual.output_dim
    state = {f"module.pre_model.visual.{k}": v for k, v in visual.items()}
    state.update({f"module.ori_model.visual.{k}": v for k, v in visual.items()})
    state.update({f"module.adapter1.{k}": v for k, v in _TheirSimplifiedAdapter(V, dim).eval().state_dict().items()})
    state.update({f"module.adapter2.{k}": v for k, v in _TheirSimplifiedAdapter(V, dim).eval().state_dict().items()})
    ckpt = tmp_path / "best_model.pth"
    torch.save({"model_state_dict": state}, ckpt)

    out = tmp_path / "r.json"
    r = run_c2p(["classify", mesh, "--adapter", ckpt, *TINY, "--labels", "box,ball", "-o", out, "--workers", "0",
                 "--device", "cpu", "-q"], capsys, monkeypatch)  # fmt: skip
    assert r.code == 0, r.err
    doc = json.loads(out.read_text())
    assert doc["meta"]["model"] == "c2p-tiny" and doc["meta"]["adapter_format"] == "clip2point-official"
    assert doc["results"][0]["label"] in ("box", "ball") and np.isfinite(doc["results"][0]["probability"])
    r = run_c2p(["classify", mesh, "--adapter", ckpt, *TINY, "--views", "6"], capsys, monkeypatch)
    _usage_line(r, "uses its own encoders and 10 views: drop --views")
