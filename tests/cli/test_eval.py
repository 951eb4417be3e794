"""`c2p eval`: metrics, label mapping, the confusion-matrix PNG, and the command (zero-shot and adapter)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from clip2point.errors import UsageError
from clip2point.evaluate import accuracy_report, label_mapping

CLASSES = ["cone", "cube", "torus"]


def test_accuracy_report_by_hand():
    targets = [0, 0, 0, 1, 1, 2]
    preds = [0, 0, 1, 1, 2, 2]
    r = accuracy_report(targets, preds, ["a", "b", "c", "d"])
    assert r["top1"] == pytest.approx(4 / 6)
    assert r["per_class"]["a"] == {"accuracy": pytest.approx(2 / 3), "count": 3}
    assert r["per_class"]["b"]["accuracy"] == pytest.approx(0.5)
    assert r["per_class"]["c"]["accuracy"] == 1.0
    assert r["per_class"]["d"] == {"accuracy": None, "count": 0}
    assert r["mean_class_accuracy"] == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)
    assert r["confusion"] == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]


def test_label_mapping_by_name_and_by_position():
    assert label_mapping(["b", "a"], ["a", "b", "c"]) == [1, 0]
    with pytest.raises(UsageError, match="no label for dataset class"):
        label_mapping(["a", "z"], ["a", "b"])
    assert label_mapping(["night_stand", "sofa"], ["nightstand", "couch"], positional=True) == [0, 1]
    # A dataset's folder names find the official strings of a label set ("night_stand" -> "night stand").
    assert label_mapping(["night_stand", "flower_pot"], ["flower pot", "night stand", "sofa"]) == [1, 0]
    with pytest.raises(UsageError, match="1 label names were given for a dataset with 2 classes"):
        label_mapping(["a", "b"], ["x"], positional=True)


@pytest.fixture(scope="module")
def tiny_synth(tmp_path_factory):
    from clip2point.synth import write_dataset

    root = tmp_path_factory.mktemp("synth3")
    write_dataset(root, classes=CLASSES, per_class=3, test_per_class=2, fmt="npy", n_points=256, seed=0)
    (root / "test" / "cube" / "cube_0099.ply").write_text("ply\nformat ascii 1.0\nelement vertex 3\nend_header\n1 2\n")
    return root


def _invoke(args):
    from typer.testing import CliRunner

    from clip2point.app import app

    return CliRunner().invoke(app, args)


def test_eval_zero_shot_reports_and_skips_the_bad_file(tiny_synth, tmp_path, tiny_model_name):
    out = tmp_path / "zs"
    result = _invoke(["eval", str(tiny_synth), "--out", str(out), "--model", tiny_model_name, "--pretrained", "none",
                      "--points", "128", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["mode"] == "zero-shot" and report["labels"] == CLASSES
    assert report["n"] == 6 and len(report["predictions"]) == 6
    assert [s["id"] for s in report["skipped"]] == ["test/cube/cube_0099.ply"]
    assert np.asarray(report["confusion"]).sum() == 6
    assert report["dataset"]["split"] == "test" and report["classifier"]["model"] == tiny_model_name
    assert Image.open(out / "confusion.png").format == "PNG"
    assert "could not be read" in result.output


def test_eval_with_an_adapter_run(tiny_synth, tmp_path, tiny_model_name):
    from clip2point.training.fewshot import FewShotOptions, run_fewshot

    run = tmp_path / "run"
    run_fewshot(tiny_synth, run, FewShotOptions(shots=3, epochs=2, model=tiny_model_name, pretrained="none",
                                                n_points=128, device="cpu", select="last", use_cache=False,
                                                eval_test=False))
    out = tmp_path / "fs"
    result = _invoke(["eval", str(tiny_synth), "--adapter", str(run), "--which", "last", "--out", str(out),
                      "--points", "128", "--device", "cpu", "--split", "train"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["mode"] == "few-shot" and report["n"] == 9 and report["classifier"]["which"] == "last"
    bad = _invoke(["eval", str(tiny_synth), "--adapter", str(run), "--labels", "a,b,c", "--out", str(out)])
    assert isinstance(bad.exception, UsageError)
    # `c2p classify --adapter RUN` takes its labels from the run's config.
    results = tmp_path / "classify.json"
    classified = _invoke(["classify", str(tiny_synth / "test" / "cone"), "--adapter", str(run), "--device", "cpu",
                          "--points", "128", "--workers", "0", "--quiet", "--output", str(results)])
    assert classified.exit_code == 0, classified.output
    rows = json.loads(results.read_text())["results"]
    assert len(rows) == 2 and {r["label"] for r in rows} <= set(CLASSES)


def test_out_that_is_a_file_fails_before_any_model_is_loaded(tiny_synth, tmp_path):
    afile = tmp_path / "report"
    afile.write_text("x")
    # An unknown model would fail when loaded: the --out check must come first.
    result = _invoke(["eval", str(tiny_synth), "--out", str(afile), "--model", "no-such-model", "--device", "cpu"])
    assert isinstance(result.exception, UsageError) and "is a file" in str(result.exception)


def test_adapter_eval_and_classifier_read_clouds_the_runs_way(tiny_synth, tmp_path, tiny_model_name):
    from clip2point.models.adapters import load_adapter_classifier
    from clip2point.training.fewshot import FewShotOptions, run_fewshot

    run = tmp_path / "run"
    run_fewshot(tiny_synth, run, FewShotOptions(shots=2, epochs=1, model=tiny_model_name, pretrained="none",
                                                n_points=96, up="y", sampling="fps", device="cpu", select="last",
                                                use_cache=False, eval_test=False))
    out = tmp_path / "fs"
    result = _invoke(["eval", str(tiny_synth), "--adapter", str(run), "--out", str(out), "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    ds = json.loads((out / "report.json").read_text())["dataset"]
    assert (ds["n_points"], ds["sampling"], ds["up"]) == (96, "fps", "y")
    # An explicit value that differs from the run's is used, with a warning.
    result = _invoke(["eval", str(tiny_synth), "--adapter", str(run), "--out", str(out), "--device", "cpu", "-q",
                      "--points", "64", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert "--points 64 differs from the run's 96" in " ".join(result.output.split())
    assert json.loads((out / "report.json").read_text())["dataset"]["n_points"] == 64
    clf = load_adapter_classifier(run, device="cpu")
    assert clf.meta["read"] == {"n_points": 96, "sampling": "fps", "up": "y"}


def test_eval_on_a_modelnet40_ply_folder_reports_per_class_accuracy_and_its_rotation(tmp_path, tiny_model_name):
    """The paper's evaluation set: auto-detected, official ModelNet40 strings, the ModelNet rotation."""
    from clip2point.models.prompts import MODELNET40_FOLDERS

    root = tmp_path / "ModelNet40_Ply"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i, label in enumerate((0, 23, 23, 39)):
        pts = rng.standard_normal((64, 3)) * (1.0, 2.0, 0.5)
        body = "".join(f"{x:.5f} {y:.5f} {z:.5f}\n" for x, y, z in pts)
        (root / f"{label}_{i:04d}.ply").write_text(
            "ply\nformat ascii 1.0\nelement vertex 64\nproperty float x\nproperty float y\nproperty float z\n"
            f"end_header\n{body}")
    out = tmp_path / "report"
    result = _invoke(["eval", str(root), "--out", str(out), "--model", tiny_model_name, "--pretrained", "none",
                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())  # rich wraps long lines
    assert "modelnet40-ply test: 4 samples" in said
    assert "up axis z: the ModelNet rotation points @ Rx(+90) @ Ry(-90)" in said
    report = json.loads((out / "report.json").read_text())
    assert report["dataset"]["kind"] == "modelnet40-ply" and report["dataset"]["up"] == "z"
    assert report["dataset"]["all_points"] is True and "every point of each file" in said
    assert report["dataset"]["rotation"].startswith("up axis z")
    assert report["labels"] == list(MODELNET40_FOLDERS) and report["n"] == 4
    assert report["per_class"]["night_stand"]["count"] == 2 and report["per_class"]["xbox"]["count"] == 1
    assert report["per_class"]["airplane"]["accuracy"] in (0.0, 1.0)
    assert report["classifier"]["templates"] == ["image of a {}"]


def test_eval_takes_a_labels_file_reports_top_k_and_refuses_to_replace_a_report(tiny_synth, tmp_path, tiny_model_name):
    names = tmp_path / "names.txt"
    names.write_text("# the dataset's classes, renamed in order\nice cream cone\nbox\ndonut\n")
    out = tmp_path / "rep"
    args = ["eval", str(tiny_synth), "--output", str(out), "--model", tiny_model_name, "--pretrained", "none",
            "--labels-file", str(names), "--top-k", "2", "--points", "128", "--device", "cpu", "--workers", "0", "-q"]
    result = _invoke(args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["labels"] == ["ice cream cone", "box", "donut"] and report["complete"] is True
    assert report["top_k"] == 2 and report["top1"] <= report["top_k_accuracy"] <= 1.0
    assert all(len(p["top_k"]) == 2 and p["top_k"][0] == p["predicted"] for p in report["predictions"])
    assert report["run"]["labels"] == report["labels"] and report["run"]["n_points"] == 128
    again = _invoke(args)
    assert isinstance(again.exception, UsageError) and "already holds a report" in str(again.exception)
    assert _invoke([*args, "--overwrite"]).exit_code == 0


def test_an_interrupted_eval_writes_a_partial_report(tiny_synth, tmp_path, tiny_model_name, monkeypatch):
    import clip2point.evaluate as evaluate

    read, calls = evaluate.read_samples, []

    def interrupted_on_the_second_batch(dataset, indices):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return read(dataset, indices)

    monkeypatch.setattr(evaluate, "read_samples", interrupted_on_the_second_batch)
    out = tmp_path / "rep"
    result = _invoke(["eval", str(tiny_synth), "--output", str(out), "--model", tiny_model_name, "--pretrained", "none",
                      "--points", "128", "--device", "cpu", "--workers", "0", "-b", "2", "-q"])
    assert result.exit_code == 130, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["complete"] is False and report["n"] == 2 and len(report["predictions"]) == 2
    assert report["mode"] == "zero-shot" and report["run"]["model"] == tiny_model_name
    assert "partial report" in " ".join(result.output.split())
