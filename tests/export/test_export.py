"""`c2p export` to ONNX: graphs, parity checks against torch, metadata, and the torch-free runner.

The tiny open_clip model (c2p-tiny, random weights) stands in for ViT-B-32: same code paths,
seconds instead of minutes. ONNX Runtime runs on its CPU provider here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clip2point.export import metadata as md

LABELS = ["chair", "mug", "torus", "table", "bottle"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def zero_shot():
    from clip2point.models.classifier import load_classifier

    return load_classifier(labels=LABELS, model="c2p-tiny", pretrained="none", device="cpu", render_backend="torch")


@pytest.fixture(scope="module")
def exported(zero_shot, tmp_path_factory) -> Path:
    from clip2point.export.onnx import ExportOptions, export_classifier

    out = tmp_path_factory.mktemp("export") / "tiny"
    steps: list[str] = []
    export_classifier(zero_shot, out, ExportOptions(with_projection=True), on_step=steps.append)
    assert any("points_classifier" in s for s in steps)
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[Path]:
    """Synthetic scans as real files (binary PLY and .npy), two clouds shorter than the default 1024 points."""
    from clip2point.io import write_ply
    from clip2point.synth import random_cloud

    folder = tmp_path_factory.mktemp("scans")
    rng = np.random.default_rng(7)
    paths = []
    for i, (name, n) in enumerate([("chair", 2048), ("mug", 700), ("torus", 1500), ("table", 1024), ("bottle", 300)]):
        cloud = random_cloud(name, rng, n)
        path = folder / (f"{name}.ply" if i % 2 == 0 else f"{name}.npy")
        write_ply(path, cloud) if path.suffix == ".ply" else np.save(path, cloud)
        paths.append(path)
    return paths


def _classify(clf, paths, batch_size=3):
    from clip2point.engine.pipeline import classify_files
    from clip2point.run_spec import describe_run

    return list(classify_files(clf, paths, describe_run(batch_size=batch_size, top_k=5, workers=0, needs_labels=False)))


def test_metadata_describes_the_export(exported):
    meta = md.read_metadata(exported)
    assert meta["labels"] == LABELS
    assert meta["views"] == [[0.0, 0.0], [0.0, 90.0], [0.0, 180.0], [0.0, 270.0], [90.0, 0.0], [-90.0, 180.0]]
    assert meta["in_channels"] == 1 and meta["normalisation"]["folded_first_conv"] is True
    assert meta["normalisation"]["clip_mean"] == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    assert meta["image_size"] == 224 and meta["radius"] == pytest.approx(0.02) and meta["opset"] == 18
    assert meta["model"] == "c2p-tiny" and meta["pretrained"] == "none" and meta["weights_id"]
    assert meta["prompts"]["chair"] == ["image of a chair"]
    assert set(meta["versions"]) == {"c2p", "torch", "onnx", "onnxruntime"}
    depth = meta["graphs"]["classifier"]
    assert depth["inputs"] == {"depth": ["batch", 6, 1, 224, 224]} and depth["outputs"] == {"logits": ["batch", 5]}
    assert meta["graphs"]["points_classifier"]["inputs"] == {"points": ["batch", "points", 3], "lengths": ["batch"]}
    for graph in ("classifier", "points_classifier"):
        check = meta["check"][graph]
        assert check["passed"] and 0 <= check["max_abs_diff"] <= min(r["tolerance"] for r in check["runs"])
        assert check["argmax_agreement"] == 1.0
    assert [r["inputs"] for r in meta["check"]["classifier"]["runs"]] == ["random depth", "synthetic depth"]
    assert (exported / md.CLASSIFIER_ONNX).stat().st_size == depth["bytes"]


def test_onnx_backend_matches_torch_on_files(zero_shot, exported, files):
    from clip2point.export.runtime import load_exported_classifier

    onnx_clf = load_exported_classifier(exported, backend="onnx", device="cpu", render_backend="torch")
    assert onnx_clf.labels == LABELS and onnx_clf.in_channels == 1 and onnx_clf.meta["backend"] == "onnx"
    assert onnx_clf.meta["providers"] == ["CPUExecutionProvider"]
    ref, got = _classify(zero_shot, files), _classify(onnx_clf, files)
    assert [r.path for r in got] == [r.path for r in ref]
    for a, b in zip(ref, got, strict=True):
        assert b.ok and b.label == a.label and b.n_points == a.n_points
        assert [lab for lab, _ in b.top_k] == [lab for lab, _ in a.top_k]
        np.testing.assert_allclose([p for _, p in b.top_k], [p for _, p in a.top_k], atol=1e-4)


def test_points_graph_matches_the_torch_pipeline(zero_shot, exported, files):
    """points_classifier.onnx (renderer traced in) against render + head in torch, ragged batch."""
    from clip2point.export.run_onnx import OnnxPointsClassifier
    from clip2point.io import read_cloud

    clouds = [read_cloud(p, n_points=1024) for p in files]
    assert len({len(c) for c in clouds}) > 1  # ragged: the padding path runs
    onnx_probs = OnnxPointsClassifier(exported).predict(clouds)
    torch_probs = zero_shot.predict(clouds).numpy()
    np.testing.assert_allclose(onnx_probs, torch_probs, atol=1e-4)
    assert (onnx_probs.argmax(1) == torch_probs.argmax(1)).all()


def test_torch_free_runner_never_imports_torch(zero_shot, exported, files, tmp_path):
    """python -m clip2point.export.run_onnx with torch made unimportable gives the torch backend's results."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text("import sys\nsys.modules['torch'] = None  # any 'import torch' now fails\n")
    bad = tmp_path / "broken.ply"
    bad.write_text("not a ply file\n")
    out = tmp_path / "results.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim), str(ROOT)])}
    args = [sys.executable, "-m", "clip2point.export.run_onnx", str(exported), *map(str, files), str(bad), "-o", str(out), "--top-k", "2"]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 1, proc.stderr  # one file failed, the others were classified
    proc_check = subprocess.run(
        [sys.executable, "-c", "import torch"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
    )
    assert proc_check.returncode != 0  # the shim really blocks torch
    doc = json.loads(out.read_text())
    rows = {Path(r["path"]).name: r for r in doc["results"]}
    assert set(next(iter(rows.values()))) == {"path", "label", "probability", "top_k", "n_points", "error", "size", "mtime"}
    assert rows["broken.ply"]["label"] is None and "broken.ply" in rows["broken.ply"]["error"]
    for ref in _classify(zero_shot, files):
        row = rows[Path(ref.path).name]
        assert row["label"] == ref.label and row["n_points"] == ref.n_points
        assert row["probability"] == pytest.approx(ref.probability, abs=1e-4) and len(row["top_k"]) == 2
    assert doc["meta"]["backend"].startswith("onnxruntime") and "chair" in proc.stdout


def test_check_fails_on_a_tampered_graph(zero_shot, exported, tmp_path, monkeypatch):
    """Perturb the text-feature initializer: the export must fail and record the measured difference."""
    import onnx
    from onnx import numpy_helper

    from clip2point.errors import ExportCheckError
    from clip2point.export import onnx as exp

    model = onnx.load(str(exported / md.CLASSIFIER_ONNX))
    k, d = zero_shot.head.text_features.shape
    target = next(i for i in model.graph.initializer if tuple(i.dims) in ((k, d), (d, k)))  # the text features
    values = numpy_helper.to_array(target) + np.random.default_rng(0).normal(0, 0.1, tuple(target.dims)).astype(np.float32)
    target.CopyFrom(numpy_helper.from_array(values, target.name))
    tampered = tmp_path / "tampered.onnx"
    onnx.save(model, str(tampered))

    def fake_export(module, path, **kwargs):  # the exporter "produced" the tampered graph
        Path(path).write_bytes(tampered.read_bytes())
        return {"depth": ["batch", 6, 1, 224, 224]}

    monkeypatch.setattr(exp, "export_depth_graph", fake_export)
    out = tmp_path / "bad"
    with pytest.raises(ExportCheckError) as info:
        exp.export_classifier(zero_shot, out, exp.ExportOptions())
    assert "classifier.onnx" in str(info.value) and "max |diff|" in str(info.value) and "\n" not in str(info.value)
    meta = md.read_metadata(out)
    assert meta["check"]["classifier"]["passed"] is False
    assert meta["check"]["classifier"]["max_abs_diff"] > max(r["tolerance"] for r in meta["check"]["classifier"]["runs"])


def test_compare_logits_rule():
    from clip2point.export.parity import compare_logits

    ref = np.array([[10.0, 2.0, 1.0], [5.0, 5.0005, 0.0]])
    ok = compare_logits(ref, ref + 1e-4, inputs="x")
    assert ok.passed and ok.tolerance == pytest.approx(1e-2) and ok.near_ties == 1
    swapped = ref.copy()
    swapped[1, [0, 1]] = swapped[1, [1, 0]]  # a near tie may flip
    assert compare_logits(ref, swapped, inputs="x").passed
    flipped = ref.copy()
    flipped[0, 1] = 10.001  # a clear argmax change (torch had no near tie there)
    report = compare_logits(ref, flipped, inputs="x")
    assert not report.passed and report.argmax_agreement == 0.5
    assert not compare_logits(ref, ref + 0.1, inputs="x").passed
    assert not compare_logits(ref, np.full_like(ref, np.nan), inputs="x").passed
    assert not compare_logits(ref, ref[:, :2], inputs="x").passed


def test_generic_export_of_an_open_clip_tower_with_dynamic_batch(tmp_path):
    """export_depth_graph on a stand-in head: open_clip's unfolded tiny visual tower + a linear layer."""
    import open_clip

    from clip2point.export.onnx import export_depth_graph
    from clip2point.export.parity import cpu_session, random_depth_maps
    from clip2point.models.encoders import register_model_configs

    register_model_configs()
    torch.manual_seed(0)
    visual = open_clip.create_model("c2p-tiny", pretrained=None).visual.eval()

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.visual, self.fc = visual, torch.nn.Linear(64, 3)

        def forward(self, depth):
            f = self.visual(depth.flatten(0, 1)).reshape(depth.shape[0], 2, -1).mean(1)
            return self.fc(f)

    head = Head().eval()
    shapes = export_depth_graph(head, tmp_path / "g.onnx", num_views=2, in_channels=3)
    assert shapes == {"depth": ["batch", 2, 3, 224, 224]}
    session = cpu_session(tmp_path / "g.onnx")
    for batch in (1, 3):
        x = random_depth_maps(batch, 2, 3, 224, seed=batch)
        with torch.no_grad():
            ref = head(x).numpy()
        np.testing.assert_allclose(session.run(None, {"depth": x.numpy()})[0], ref, atol=1e-4)


def test_opset_below_18_is_refused(tmp_path):
    from clip2point.errors import UsageError
    from clip2point.export.onnx import export_depth_graph

    with pytest.raises(UsageError, match="opset"):
        export_depth_graph(torch.nn.Identity(), tmp_path / "x.onnx", num_views=1, in_channels=1, opset=17)


def test_adapter_run_exports_through_the_cli_and_matches_torch(files, tmp_path, capsys, monkeypatch):
    """A real 1-epoch `c2p fewshot` run (GDPA, both encoder paths) exported with `c2p export --adapter`."""
    from clip2point.export.runtime import load_exported_classifier
    from clip2point.models.adapters import load_adapter_classifier
    from clip2point.synth import write_dataset
    from clip2point.training.fewshot import FewShotOptions, run_fewshot
    from tests.cli_helpers import run_c2p

    data = tmp_path / "data"
    write_dataset(data, classes=["chair", "mug", "torus"], per_class=2, test_per_class=1, fmt="npy", n_points=512, seed=1)
    run = tmp_path / "run"
    opts = FewShotOptions(
        shots=2, epochs=1, batch_size=4, model="c2p-tiny", pretrained="none", views=6, device="cpu", use_cache=False,
        select="last", eval_test=False, render_backend="torch", fusion="gated",
    )
    run_fewshot(data, run, opts)

    out = tmp_path / "export"
    r = run_c2p(["export", "--out", out, "--adapter", run], capsys, monkeypatch)
    assert r.code == 0, r.err
    assert "classifier.onnx" in r.out and "passed" in r.out
    meta = md.read_metadata(out)
    assert meta["adapter"] == str(run) and meta["labels"] == ["chair", "mug", "torus"] and meta["fusion"] == "gated"
    assert meta["check"]["classifier"]["passed"] and "points_classifier" not in meta["graphs"]

    torch_clf = load_adapter_classifier(run, device="cpu", render_backend="torch")
    onnx_clf = load_exported_classifier(out, backend="onnx", device="cpu", render_backend="torch")
    for a, b in zip(_classify(torch_clf, files), _classify(onnx_clf, files), strict=True):
        assert b.label == a.label
        np.testing.assert_allclose([p for _, p in b.top_k], [p for _, p in a.top_k], atol=1e-4)

    r = run_c2p(["export", "--out", tmp_path / "x", "--adapter", run, "--labels", "a,b"], capsys, monkeypatch)
    assert r.code == 2 and "brings its own model, labels" in r.err and "drop --labels" in r.err


def test_torch_free_runner_refuses_a_points_graph_that_failed_its_check(exported, files, tmp_path, capsys):
    import shutil

    from clip2point.export import run_onnx

    copy = tmp_path / "failed"
    shutil.copytree(exported, copy)
    meta = md.read_metadata(copy)
    meta["check"]["points_classifier"].update(passed=False, max_abs_diff=0.5)
    md.write_metadata(copy, meta)
    assert run_onnx.main([str(copy), str(files[0]), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("error: ") and "points_classifier.onnx: failed its check at export (max abs diff 0.5)" in err
    assert run_onnx.main([str(exported), str(files[0]), "--quiet"]) == 0  # the untouched export runs


# ---------------------------------------------------------------------------------------------
# Self-describing graphs (metadata_props) and the full ONNX checker
# ---------------------------------------------------------------------------------------------


def _props(path: Path) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_every_graph_carries_its_description_in_metadata_props(exported):
    meta = md.read_metadata(exported)
    for key, name in (("classifier", md.CLASSIFIER_ONNX), ("points_classifier", md.POINTS_ONNX)):
        props = _props(exported / name)
        assert json.loads(props["c2p.labels"]) == LABELS and json.loads(props["c2p.views"]) == meta["views"]
        assert props["c2p.up_axis"] == "z" and props["c2p.n_points"] == "1024" and props["c2p.sampling"] == "random"
        assert props["c2p.model"] == "c2p-tiny" and props["c2p.pretrained"] == "none" and props["c2p.weights_id"] == meta["weights_id"]
        assert props["c2p.graph"] == key and props["c2p.precision"] == "float32" and json.loads(props["c2p.check"])["passed"]
        back = md.meta_from_props(props, exported / name)
        assert {k: back[k] for k in ("labels", "views", "image_size", "radius", "in_channels")} == {
            k: meta[k] for k in ("labels", "views", "image_size", "radius", "in_channels")
        }
        assert back["points"] == {"n_points": 1024, "up_axis": "z", "sampling": "random"}
        assert meta["graphs"][key]["onnx_checker"] == "passed (full_check)"
        assert (exported / name).stat().st_size == meta["graphs"][key]["bytes"]  # stamped before it was measured


def test_a_lone_onnx_file_is_enough_for_both_runners(zero_shot, exported, files, tmp_path, capsys, monkeypatch):
    """points_classifier.onnx copied alone (no c2p_export.json) runs torch-free; classifier.onnx alone runs in classify."""
    import shutil

    from tests.cli_helpers import run_c2p

    lone = tmp_path / "deployed"
    lone.mkdir()
    shutil.copy(exported / md.POINTS_ONNX, lone / "model.onnx")
    shutil.copy(exported / md.CLASSIFIER_ONNX, lone / "depth.onnx")
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text("import sys\nsys.modules['torch'] = None\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim), str(ROOT)])}
    out = tmp_path / "r.jsonl"
    proc = subprocess.run([sys.executable, "-m", "clip2point.export.run_onnx", str(lone / "model.onnx"), *map(str, files),
                           "-o", str(out), "-q"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = {Path(r["path"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    reference = _classify(zero_shot, files)
    for ref in reference:
        row = rows[Path(ref.path).name]
        assert row["label"] == ref.label and row["probability"] == pytest.approx(ref.probability, abs=1e-4)

    out = tmp_path / "c.json"
    r = run_c2p(["classify", *files, "--backend", "onnx", "--engine", lone / "depth.onnx", "-o", out, "-q", "--workers", "0",
                 "--device", "cpu"], capsys, monkeypatch)  # fmt: skip
    assert r.code == 0, r.err
    doc = json.loads(out.read_text())
    assert [row["label"] for row in doc["results"]] == [ref.label for ref in reference]
    assert doc["meta"]["onnx_file"].endswith("depth.onnx") and doc["meta"]["model"] == "c2p-tiny"
    r = run_c2p(["classify", *files, "--backend", "onnx", "--engine", lone / "model.onnx"], capsys, monkeypatch)
    assert r.code == 2 and "a points graph" in r.err


def test_lone_graphs_that_lie_or_failed_are_refused(exported, tmp_path):
    from clip2point.errors import CheckpointError, ExportCheckError
    from clip2point.export.onnx_files import stamp_graph
    from clip2point.export.run_onnx import OnnxPointsClassifier

    good = _props(exported / md.POINTS_ONNX)
    failed = tmp_path / "failed.onnx"
    failed.write_bytes((exported / md.POINTS_ONNX).read_bytes())
    stamp_graph(failed, {**good, "c2p.check": json.dumps({"passed": False, "max_abs_diff": 0.7})})
    with pytest.raises(ExportCheckError, match=r"failed\.onnx: failed its check at export \(max abs diff 0\.7\)"):
        OnnxPointsClassifier(failed)

    bare = tmp_path / "bare.onnx"
    bare.write_bytes((exported / md.POINTS_ONNX).read_bytes())
    stamp_graph(bare, {"onnx.infer": "x"})  # every c2p.* key removed
    with pytest.raises(CheckpointError, match="no c2p metadata in this ONNX file"):
        OnnxPointsClassifier(bare)

    lies = {  # the rules of run files, the file and the key named
        "c2p.labels": ("{}", r"p\.onnx: ONNX metadata c2p\.labels: must be a list"),
        "c2p.views": (json.dumps([[0, 0]] * 5000), "c2p.views: must hold 1 to 64 items, got 5000"),
        "c2p.image_size": ("100000", "c2p.image_size: must be between 16 and 1024"),
        "c2p.in_channels": ("true", "c2p.in_channels: must be a whole number"),
        "c2p.format_version": ("99", "newer than this c2p reads"),
        "c2p.up_axis": ("x", "c2p.up_axis: must be one of z, y"),
        "c2p.radius": ("NaN", "c2p.radius: must be a number"),
        "c2p.n_points": ("10000000", "c2p.n_points: must be between 1 and 1000000"),
        "c2p.labels ": ("[", None),  # an unknown key is ignored
    }
    for key, (value, message) in lies.items():
        if message is None:
            md.meta_from_props({**good, key: value}, "p.onnx")
            continue
        with pytest.raises(CheckpointError, match=message):
            md.meta_from_props({**good, key: value}, "p.onnx")
    with pytest.raises(CheckpointError, match=r"c2p\.labels: is not valid JSON"):
        md.meta_from_props({**good, "c2p.labels": "[" * 100000}, "p.onnx")
    without = {k: v for k, v in good.items() if k != "c2p.radius"}
    with pytest.raises(CheckpointError, match=r"p\.onnx: ONNX metadata c2p\.radius: missing"):
        md.meta_from_props(without, "p.onnx")


def test_the_full_onnx_checker_runs_on_every_graph(zero_shot, exported, tmp_path, monkeypatch):
    import onnx
    from onnx import TensorProto, helper

    from clip2point.errors import ModelError
    from clip2point.export import onnx as exp
    from clip2point.export.onnx_files import stamp_graph

    # A graph the plain checker accepts and only full_check (type inference) rejects.
    relu = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                             [helper.make_tensor_value_info("y", TensorProto.INT64, [2])])  # fmt: skip
    bad = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(relu, opset_imports=[helper.make_opsetid("", 18)]), str(bad))
    onnx.checker.check_model(str(bad))
    with pytest.raises(ModelError, match="bad.onnx: the ONNX checker rejects the exported graph"):
        stamp_graph(bad, {"c2p.format": "c2p-export"})

    calls = []
    real = onnx.checker.check_model
    monkeypatch.setattr(onnx.checker, "check_model", lambda m, **kw: (calls.append((Path(m).name, kw)), real(m, **kw))[1])

    def fake_export(module, path, **kwargs):  # reuse the graph exported once for this module
        Path(path).write_bytes((exported / md.CLASSIFIER_ONNX).read_bytes())
        return {"depth": ["batch", 6, 1, 224, 224]}

    monkeypatch.setattr(exp, "export_depth_graph", fake_export)
    exp.export_classifier(zero_shot, tmp_path / "e", exp.ExportOptions(check=False, quantize="int8"))
    assert calls == [(md.CLASSIFIER_ONNX, {"full_check": True}), (md.CLASSIFIER_INT8_ONNX, {"full_check": True})]
