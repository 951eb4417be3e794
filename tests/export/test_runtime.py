"""Runtimes of exported graphs: ONNX Runtime head, provider choice, export-folder errors, and
`c2p classify --backend onnx --engine DIR` giving the torch backend's results in the same format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clip2point.errors import BackendUnavailableError, CheckpointError, UsageError
from clip2point.export import metadata as md
from tests.cli_helpers import run_c2p

TINY = ["--model", "c2p-tiny", "--pretrained", "none"]
LABELS = "cube,sphere,torus,cone"


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> Path:
    from clip2point.synth import write_dataset

    root = tmp_path_factory.mktemp("rt-scans")
    write_dataset(root, classes=LABELS.split(","), per_class=2, test_per_class=0, fmt="ply", n_points=600, seed=5)
    return root / "train"


@pytest.fixture(scope="module")
def unfolded_export(tmp_path_factory) -> Path:
    """`c2p export --no-fold`: the 3-channel (CLIP-normalised) input path, through the CLI (labels from a file)."""
    from typer.testing import CliRunner

    from clip2point.app import app

    out = tmp_path_factory.mktemp("rt-export") / "unfolded"
    names = out.parent / "labels.txt"
    names.write_text("\n".join(LABELS.split(",")) + "\n")
    result = CliRunner().invoke(app, ["export", "--output", str(out), "--labels-file", str(names), *TINY, "--no-fold"])
    assert result.exit_code == 0, result.output
    return out


def test_classify_backend_onnx_matches_torch_in_content_and_format(unfolded_export, scans, tmp_path, capsys, monkeypatch):
    meta = md.read_metadata(unfolded_export)
    assert meta["in_channels"] == 3 and meta["normalisation"]["folded_first_conv"] is False
    assert meta["graphs"]["classifier"]["inputs"] == {"depth": ["batch", 6, 3, 224, 224]}

    common = [scans, "-r", "--workers", "0", "-b", "3", "--top-k", "3", "--device", "cpu"]
    torch_out, onnx_out = tmp_path / "torch.json", tmp_path / "onnx.json"
    # The torch backend folds the first convolution; the export does not: folding is exact, so the
    # results agree to float rounding, which also cross-checks the folded and unfolded encoders.
    r = run_c2p(["classify", *common, "--labels", LABELS, *TINY, "-o", torch_out], capsys, monkeypatch)
    assert r.code == 0, r.err
    r = run_c2p(["classify", *common, "--backend", "onnx", "--engine", unfolded_export, "-o", onnx_out], capsys, monkeypatch)
    assert r.code == 0, r.err
    ref, got = json.loads(torch_out.read_text()), json.loads(onnx_out.read_text())
    assert len(got["results"]) == len(ref["results"]) == 8
    for a, b in zip(ref["results"], got["results"], strict=True):
        assert set(a) == set(b) and a["path"] == b["path"] and a["label"] == b["label"]
        assert [t["label"] for t in a["top_k"]] == [t["label"] for t in b["top_k"]]
        np.testing.assert_allclose([t["probability"] for t in b["top_k"]], [t["probability"] for t in a["top_k"]], atol=1e-4)
    assert got["meta"]["backend"] == "onnx" and got["meta"]["export"] == str(unfolded_export)


def test_classify_with_engine_refuses_labels(unfolded_export, scans, capsys, monkeypatch):
    r = run_c2p(["classify", scans, "-r", "--backend", "onnx", "--engine", unfolded_export, "--labels", "a,b"], capsys, monkeypatch)
    assert r.code == 2 and "carries its own model, labels" in r.err and "drop --labels" in r.err


def test_onnx_head_checks_shapes_and_keeps_the_device(unfolded_export):
    from clip2point.export.runtime import OnnxRuntimeHead

    head = OnnxRuntimeHead(unfolded_export / md.CLASSIFIER_ONNX, device="cpu")
    assert head.input_shape == ["batch", 6, 3, 224, 224] and head.active_providers == ["CPUExecutionProvider"]
    logits = head(torch.zeros(2, 6, 3, 224, 224))
    assert logits.shape == (2, 4) and logits.dtype == torch.float32 and logits.device.type == "cpu"
    with pytest.raises(UsageError, match=r"\[2, 6, 1, 224, 224\]"):
        head(torch.zeros(2, 6, 1, 224, 224))


def test_provider_choice(monkeypatch):
    import onnxruntime

    from clip2point.export.runtime import ort_providers

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert ort_providers("cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert ort_providers(None) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert ort_providers("cpu") == ["CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert ort_providers("cuda") == ["CPUExecutionProvider"]


def test_export_folder_errors(unfolded_export, tmp_path):
    import shutil

    from clip2point.export.runtime import load_exported_classifier

    with pytest.raises(CheckpointError, match="no such folder"):
        load_exported_classifier(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="c2p_export.json: not found"):
        load_exported_classifier(tmp_path)
    (tmp_path / md.METADATA_FILE).write_text('{"format": "something-else"}')
    with pytest.raises(CheckpointError, match="not a c2p export"):
        load_exported_classifier(tmp_path)
    (tmp_path / md.METADATA_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_exported_classifier(tmp_path)
    with pytest.raises(UsageError, match="onnx, trt"):
        load_exported_classifier(unfolded_export, backend="torch")

    copy = tmp_path / "copy"
    shutil.copytree(unfolded_export, copy)
    meta = md.read_metadata(copy)
    with pytest.raises(CheckpointError, match="--with-projection"):
        md.graph_path(copy, meta, "points_classifier")
    (copy / md.CLASSIFIER_ONNX).unlink()
    with pytest.raises(CheckpointError, match="listed in c2p_export.json but missing"):
        load_exported_classifier(copy, device="cpu")


def test_trt_backend_without_tensorrt_is_one_line(unfolded_export, monkeypatch):
    import sys

    from clip2point.export.runtime import load_exported_classifier

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # not importable, whatever is installed
    with pytest.raises(BackendUnavailableError) as info:
        load_exported_classifier(unfolded_export, backend="trt")
    message = str(info.value)
    assert "\n" not in message and "pip install tensorrt" in message and "--backend onnx" in message


def test_export_cli_refuses_bad_options_before_loading_a_model(tmp_path, capsys, monkeypatch):
    import sys

    r = run_c2p(["export", "--out", tmp_path / "o", "--labels", "a,b", *TINY, "--opset", "17"], capsys, monkeypatch)
    assert r.code == 2 and "--opset must be at least 18" in r.err
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    r = run_c2p(["export", "--out", tmp_path / "o", "--labels", "a,b", *TINY, "--trt"], capsys, monkeypatch)
    assert r.code == 1 and "TensorRT is not installed" in r.err and len(r.err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()  # failed before any work


def test_exports_that_failed_their_check_are_refused(unfolded_export, scans, tmp_path, capsys, monkeypatch):
    """`c2p export` leaves the files of a failed check behind; no runtime may use them."""
    import shutil

    from clip2point.errors import ExportCheckError
    from clip2point.export.runtime import load_exported_classifier

    copy = tmp_path / "failed"
    shutil.copytree(unfolded_export, copy)
    meta = md.read_metadata(copy)
    assert meta["check"]["classifier"]["passed"] is True
    load_exported_classifier(copy, device="cpu")  # a passed check loads
    meta["check"]["classifier"].update(passed=False, max_abs_diff=0.25)
    md.write_metadata(copy, meta)
    for backend in ("onnx", "trt"):
        with pytest.raises(ExportCheckError, match=r"classifier.onnx: failed its check at export \(max abs diff 0.25\); re-export"):
            load_exported_classifier(copy, backend=backend, device="cpu")
    result = run_c2p(["classify", scans, "-r", "--backend", "onnx", "--engine", copy, "--device", "cpu"], capsys, monkeypatch)
    assert result.code != 0 and "failed its check at export" in result.err and "Traceback" not in result.err

    # The engine's own check (against ONNX Runtime) is refused too, before TensorRT is even imported.
    meta["check"]["classifier"].update(passed=True, max_abs_diff=1e-6)
    meta["graphs"]["engine"] = {"file": md.ENGINE_FILE, "bytes": 6, "built_from": md.CLASSIFIER_ONNX}
    meta["tensorrt"] = {"check": {"passed": False, "max_abs_diff": 3.5}}
    md.write_metadata(copy, meta)
    (copy / md.ENGINE_FILE).write_bytes(b"ENGINE")
    with pytest.raises(ExportCheckError, match=r"classifier.engine: failed its check at export \(max abs diff 3.5\)"):
        load_exported_classifier(copy, backend="trt")
    load_exported_classifier(copy, backend="onnx", device="cpu")  # the ONNX graph itself passed
