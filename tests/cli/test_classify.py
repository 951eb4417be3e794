"""`c2p classify` end to end on synthetic files with the tiny model: results, errors, outputs, exit codes."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.cli_helpers import run_c2p

TINY = ["--model", "c2p-tiny", "--pretrained", "none"]
LABELS = "cube,sphere,torus"


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> Path:
    from clip2point.synth import write_dataset

    root = tmp_path_factory.mktemp("scans")
    write_dataset(root, classes=["cube", "sphere", "torus"], per_class=2, test_per_class=0, fmt="ply", n_points=512, seed=3)
    folder = root / "train"
    (folder / "broken.ply").write_bytes(b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nend_header\n1\n")
    (folder / "notes.xyz").write_text("")
    return folder


def test_classify_reports_every_file_and_keeps_going_after_bad_ones(scans, tmp_path, capsys, monkeypatch):
    out = tmp_path / "r.jsonl"
    r = run_c2p(["classify", scans, "--recursive", "--labels", LABELS, *TINY, "--output", out, "--workers", "0", "-b", "4"], capsys, monkeypatch)
    assert r.code == 1, r.err  # some files failed
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    by_name = {Path(row["path"]).name: row for row in rows}
    assert len(rows) == 8
    good = [row for name, row in by_name.items() if name not in ("broken.ply", "notes.xyz")]
    assert len(good) == 6 and all(row["error"] is None and row["label"] in LABELS.split(",") for row in good)
    assert all(abs(sum(t["probability"] for t in row["top_k"]) - 1.0) < 1e-4 for row in good)  # 3 labels, top-3 = all
    for bad in ("broken.ply", "notes.xyz"):
        assert by_name[bad]["label"] is None and bad in by_name[bad]["error"]
    assert r.out == ""  # the table is for terminals; results went to the file
    assert f"failed {scans / 'broken.ply'}:" in r.err and f"failed {scans / 'notes.xyz'}:" in r.err


def test_all_good_exits_zero_and_writes_csv_and_json(scans, tmp_path, capsys, monkeypatch):
    files = sorted(scans.rglob("*_000*.ply"))
    assert len(files) == 6
    csv_out, json_out = tmp_path / "r.csv", tmp_path / "r.json"
    r = run_c2p(["classify", *files, "--labels", LABELS, *TINY, "-o", csv_out, "--top-k", "2", "--workers", "0"], capsys, monkeypatch)
    assert r.code == 0, r.err
    rows = list(csv.DictReader(csv_out.open()))
    assert [Path(row["path"]) for row in rows] == files
    assert set(rows[0]) >= {"path", "label", "probability", "label_2", "probability_2"} and "label_3" not in rows[0]
    r = run_c2p(["classify", *files, "--labels", LABELS, *TINY, "-o", json_out, "--workers", "0", "-q"], capsys, monkeypatch)
    doc = json.loads(json_out.read_text())
    assert r.code == 0 and doc["meta"]["model"] == "c2p-tiny" and len(doc["results"]) == 6


def test_prefetching_workers_give_the_same_results_as_in_process_reading(scans):
    from clip2point.engine.pipeline import classify_files, classify_files_sequential
    from clip2point.models.classifier import load_classifier
    from clip2point.run_spec import describe_run

    files = sorted(scans.rglob("*_000*.ply"))
    clf = load_classifier(labels=LABELS, model="c2p-tiny", pretrained="none", device="cpu")
    spec = describe_run(n_points=256, batch_size=4, workers=2, needs_labels=False)
    piped = list(classify_files(clf, files, spec))
    single = list(classify_files_sequential(clf, files, spec))
    assert [r.label for r in piped] == [r.label for r in single]
    np.testing.assert_allclose([r.probability for r in piped], [r.probability for r in single], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--labels", LABELS, "--backend", "tensorflow"], "--backend"),
        (["--labels", LABELS, "--views", "7"], "--views"),
        (["--labels", LABELS, "--output", "r.txt"], "unknown format"),
        (["--labels", LABELS, "--sampling", "grid"], "--sampling"),
        ([], "labels"),
    ],
)
def test_usage_errors_exit_2_with_one_line(scans, tmp_path, capsys, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    r = run_c2p(["classify", scans, *TINY, *args], capsys, monkeypatch)
    assert r.code == 2, (r.code, r.err)
    assert needle in r.err and r.err.strip().count("\n") == 0


def test_missing_path_is_a_failed_result_not_a_crash(scans, tmp_path, capsys, monkeypatch):
    good = sorted(scans.rglob("cube_*.ply"))[0]
    out = tmp_path / "r.jsonl"
    r = run_c2p(["classify", good, tmp_path / "nope.ply", "--labels", LABELS, *TINY, "-o", out, "--workers", "0"], capsys, monkeypatch)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert r.code == 1 and len(rows) == 2
    assert {row["error"] is None for row in rows} == {True, False}


def test_a_failed_run_leaves_an_earlier_output_file_untouched(scans, tmp_path, capsys, monkeypatch):
    out = tmp_path / "r.jsonl"
    out.write_text("earlier results\n")
    r = run_c2p(["classify", scans, "--labels", LABELS, "--model", "no-such-model", "--pretrained", "none", "-o", out,
                 "--overwrite"], capsys, monkeypatch)  # fmt: skip
    assert r.code != 0 and "no-such-model" in r.err
    assert out.read_text() == "earlier results\n"


def test_python_api_classifies_arrays_and_files(scans):
    import clip2point

    clf = clip2point.load_classifier(labels=LABELS, model="c2p-tiny", pretrained="none", device="cpu")
    rng = np.random.default_rng(0)
    predictions = clip2point.classify_points([rng.normal(size=(300, 3)), rng.normal(size=(120, 3)) * 5 + 2], classifier=clf)
    assert len(predictions) == 2 and all(p.label in LABELS.split(",") for p in predictions)
    np.testing.assert_allclose([sum(p.probabilities.values()) for p in predictions], 1.0, rtol=1e-5)
    assert [p.n_points for p in predictions] == [300, 120] and len(predictions[0].top_k) == 3
    files = sorted(scans.rglob("*.ply"))
    results = clip2point.classify_files(files, classifier=clf)
    assert len(results) == len(files)
    assert sum(not r.ok for r in results) == 1 and "broken.ply" in next(r.error for r in results if not r.ok)


def test_render_writes_a_montage_png(scans, tmp_path, capsys, monkeypatch):
    from PIL import Image

    src = sorted(scans.rglob("torus_*.ply"))[0]
    out = tmp_path / "views.png"
    r = run_c2p(["render", src, "--views", "10", "--out", out, "--columns", "5"], capsys, monkeypatch)
    assert r.code == 0, r.err
    img = Image.open(out)
    assert img.size[0] >= 5 * 224 and img.size[1] >= 2 * 224
    pixels = np.asarray(img)
    assert pixels.min() == 0 and pixels.max() == 255  # nearest surface black, background white


def test_help_imports_neither_triton_nor_open3d_nor_tensorrt():
    code = (
        "import sys; sys.argv=['c2p','--help']\n"
        "from clip2point.app import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "bad=[m for m in ('triton','open3d','tensorrt') if m in sys.modules]\n"
        "print('HEAVY', bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out and "classify" in out


def test_unknown_option_is_a_usage_error_not_a_traceback(capsys, monkeypatch):
    r = run_c2p(["classify", "x.ply", "--no-such-option"], capsys, monkeypatch)
    assert r.code == 2
    assert "No such option" in r.err and "Traceback" not in r.err


def test_api_takes_one_path_and_keeps_the_given_order(scans, tmp_path):
    import clip2point

    clf = clip2point.load_classifier(labels=LABELS, model="c2p-tiny", pretrained="none", device="cpu")
    one = sorted(scans.rglob("cube_*.ply"))[0]
    assert [r.path for r in clip2point.classify_files(str(one), classifier=clf)] == [str(one)]
    missing = tmp_path / "nope.ply"
    other = sorted(scans.rglob("torus_*.ply"))[0]
    results = clip2point.classify_files([one, missing, other], classifier=clf)
    assert [r.path for r in results] == [str(one), str(missing), str(other)]
    assert [r.ok for r in results] == [True, False, True]


def test_output_that_is_a_folder_fails_before_any_work(scans, tmp_path, capsys, monkeypatch):
    (tmp_path / "res.csv").mkdir()
    r = run_c2p(["classify", scans, "--labels", LABELS, *TINY, "-o", tmp_path / "res.csv"], capsys, monkeypatch)
    assert r.code == 2 and "is a folder" in r.err and "classifying" not in r.err


def test_classify_points_drops_nan_rows_and_refuses_empty_and_degenerate_clouds():
    import clip2point
    from clip2point.errors import UsageError

    clf = clip2point.load_classifier(labels=LABELS, model="c2p-tiny", pretrained="none", device="cpu")
    rng = np.random.default_rng(1)
    clean = rng.normal(size=(200, 3))
    dirty = np.vstack([clean, [[np.nan, 0, 0], [np.inf, 1, 1]]])
    (got,), (want,) = clip2point.classify_points(dirty, classifier=clf), clip2point.classify_points(clean, classifier=clf)
    np.testing.assert_allclose(list(got.probabilities.values()), list(want.probabilities.values()), atol=1e-6)
    with pytest.raises(UsageError, match="cloud 0: no finite points"):
        clip2point.classify_points(np.full((5, 3), np.nan), classifier=clf)
    # every point in one place: read_cloud refuses such a file, classify_points such an array
    with pytest.raises(UsageError, match="cloud 1: all points coincide"):
        clip2point.classify_points([clean, np.ones((50, 3))], classifier=clf)


def test_classify_with_an_adapter_reads_files_the_way_the_adapter_was_trained(tmp_path, capsys, monkeypatch):
    from clip2point.synth import write_dataset

    write_dataset(tmp_path / "d", classes=["cube", "torus"], per_class=4, test_per_class=1, fmt="npy", n_points=512, seed=0)
    run = tmp_path / "run"
    r = run_c2p(["fewshot", tmp_path / "d", "--out", run, *TINY, "--shots", "3", "--epochs", "1", "--select", "last",
                 "--points", "128", "--up", "y", "--device", "cpu"], capsys, monkeypatch)
    assert r.code == 0, r.err
    test_files = sorted((tmp_path / "d" / "test").rglob("*.npy"))
    out = tmp_path / "r.json"
    r = run_c2p(["classify", *test_files, "--adapter", run, "-o", out, "--workers", "0"], capsys, monkeypatch)
    assert r.code == 0, r.err
    assert json.loads(out.read_text())["meta"]["read"] == {"n_points": 128, "sampling": "random", "up": "y", "seed": 0}
    r = run_c2p(["classify", *test_files, "--adapter", run, "-o", out, "--workers", "0", "--points", "64", "--overwrite"],
                capsys, monkeypatch)  # fmt: skip
    assert r.code == 0 and "differs from the adapter" in r.err
    assert json.loads(out.read_text())["meta"]["read"]["n_points"] == 64


def test_result_files_get_ordinary_permissions(tmp_path):
    import os
    import stat

    from clip2point.engine.pipeline import FileResult
    from clip2point.engine.result_files import write_results

    old = os.umask(0o022)
    try:
        write_results(tmp_path / "r.csv", [FileResult(path="a.ply", error="a.ply: no points")])
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.csv").stat().st_mode) == 0o644
