"""Tampered exports: labels that do not match the graph's outputs (in c2p_export.json or in a lone
graph's c2p.* metadata), fields the rules of run files refuse, graph files named outside the folder,
and files ONNX Runtime cannot load (truncated, a pickle named .onnx, external data that escapes
the folder). Both runners answer with one line naming the file; nothing else is written."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clip2point.errors import CheckpointError
from clip2point.export import metadata as md
from tests.cli_helpers import run_c2p
from tests.hostile_helpers import assert_one_line, tree_state

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
LABELS = ["cube", "sphere"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    from clip2point.export.onnx import ExportOptions, export_classifier
    from clip2point.models.classifier import load_classifier

    clf = load_classifier(labels=LABELS, model="c2p-tiny", pretrained="none", device="cpu", render_backend="torch")
    out = tmp_path_factory.mktemp("export") / "good"
    export_classifier(clf, out, ExportOptions(with_projection=True, check=False))
    return out


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> Path:
    from clip2point.synth import write_dataset

    root = tmp_path_factory.mktemp("scans")
    write_dataset(root, classes=LABELS, per_class=1, test_per_class=0, fmt="ply", n_points=300, seed=0)
    return root / "train"


def _relabel(exported: Path, folder: Path, labels: list[str]) -> Path:
    """The export with other labels, in c2p_export.json and in every graph's metadata."""
    from clip2point.export.onnx import stamp_graph

    shutil.copytree(exported, folder)
    meta = json.loads((folder / md.METADATA_FILE).read_text())
    (folder / md.METADATA_FILE).write_text(json.dumps({**meta, "labels": labels}))
    for name in (md.CLASSIFIER_ONNX, md.POINTS_ONNX):
        props = {p.key: p.value for p in onnx.load(str(folder / name)).metadata_props}
        stamp_graph(folder / name, {**props, "c2p.labels": json.dumps(labels)})
    return folder


def _run_onnx(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clip2point.export.run_onnx", *map(str, args)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip


@pytest.mark.parametrize("labels", [["cube"], ["cube", "sphere", "cone"]])
def test_labels_that_do_not_match_the_graph_are_refused_by_both_runners(exported, scans, tmp_path, labels, capsys, monkeypatch):
    folder = _relabel(exported, tmp_path / "lie", labels)
    n = len(labels)
    before = tree_state(tmp_path)
    cases = [
        (folder, f"{folder / md.METADATA_FILE}: lists {n} label", md.POINTS_ONNX),
        (folder / md.POINTS_ONNX, f"{folder / md.POINTS_ONNX}: ONNX metadata c2p.labels: lists {n} label", md.POINTS_ONNX),
    ]
    for source, start, graph in cases:
        r = _run_onnx(source, scans, "-r", "-q", "-o", tmp_path / "rows.jsonl")
        assert r.returncode == 1 and r.stdout == ""
        assert_one_line(r.stderr, f"error: {start}", f"but {graph} outputs 2 classes")
    for source, start in ((folder, f"{folder / md.METADATA_FILE}: lists {n} label"),
                          (folder / md.CLASSIFIER_ONNX, f"{folder / md.CLASSIFIER_ONNX}: ONNX metadata c2p.labels: lists")):  # fmt: skip
        r = run_c2p(["classify", scans, "-r", "--backend", "onnx", "--engine", source, "--device", "cpu", "-o", tmp_path / "rows.jsonl"],
                    capsys, monkeypatch)  # fmt: skip
        assert r.code == 1 and r.out == ""
        assert_one_line(r.err, f"error: {start}", f"but {md.CLASSIFIER_ONNX} outputs 2 classes")
    assert tree_state(tmp_path) == before  # no result file, nothing else touched


def test_the_good_export_still_classifies_every_file(exported, scans, tmp_path):
    r = _run_onnx(exported, scans, "-r", "-q", "-o", tmp_path / "rows.jsonl")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(row["label"] in LABELS for row in rows)


def test_export_file_fields_follow_the_rules_of_run_files(exported, tmp_path):
    meta = json.loads((exported / md.METADATA_FILE).read_text())
    lies = {
        "labels": (["cube", ""], "labels[1]: must not be empty"),
        "views": ([[0, 0]] * 65, "views: must hold 1 to 64 items"),
        "image_size": (20000, "image_size: must be between 16 and 1024"),
        "radius": (float("nan"), "radius: must be a number"),
        "in_channels": ("3", "in_channels: must be a whole number"),
        "graphs": ({"classifier": {"file": "../../elsewhere.onnx"}}, "graphs.classifier.file: has an unexpected form"),
        "points": ({"n_points": 10**9}, "points.n_points: must be between 1 and 1000000"),
        "precision": ("float16", "precision: must be one of float32, int8"),
    }
    for key, (value, message) in lies.items():
        folder = tmp_path / key
        folder.mkdir()
        (folder / md.METADATA_FILE).write_text(json.dumps({**meta, key: value}))
        with pytest.raises(CheckpointError) as info:
            md.read_metadata(folder)
        assert str(info.value).startswith(f"{folder / md.METADATA_FILE}: {message}"), str(info.value)


def _escaping(exported: Path, folder: Path) -> Path:
    from onnx.external_data_helper import convert_model_to_external_data

    folder.mkdir()
    model = onnx.load(str(exported / md.POINTS_ONNX))
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="weights.bin", size_threshold=1024)
    onnx.save(model, str(folder / "ext.onnx"))
    bare = onnx.load(str(folder / "ext.onnx"), load_external_data=False)
    for tensor in bare.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../../../../etc/passwd"
    onnx.save(bare, str(folder / "escape.onnx"))
    return folder / "escape.onnx"


def test_graphs_onnx_runtime_cannot_load_are_one_line_naming_the_file(exported, scans, tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "truncated.onnx").write_bytes((exported / md.POINTS_ONNX).read_bytes()[:50_000])
    (bad / "pickle.onnx").write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    escape = _escaping(exported, tmp_path / "ext")
    before = tree_state(tmp_path)
    for path, why in ((bad / "truncated.onnx", "Protobuf parsing failed"), (bad / "pickle.onnx", "Protobuf parsing failed"),
                      (escape, "External data path")):  # fmt: skip
        r = _run_onnx(path, scans, "-r", "-q")
        assert r.returncode == 1 and r.stdout == ""
        assert_one_line(r.stderr, f"error: {path}: ONNX Runtime cannot load it", why)
        r = run_c2p(["classify", scans, "-r", "--backend", "onnx", "--engine", path, "--device", "cpu"], capsys, monkeypatch)
        assert r.code == 1 and r.out == ""
        assert_one_line(r.err, f"error: {path}: ONNX Runtime cannot load it", why)
    assert tree_state(tmp_path) == before
