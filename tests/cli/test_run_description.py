"""One description of a run: the CLI and the Python API give the same answers, outputs record what
ran, --resume refuses another run, an existing output is never replaced unasked, and every command
declares a shared option the same way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.cli_helpers import run_c2p

ROOT = Path(__file__).resolve().parents[2]
SCANS = ROOT / "examples" / "scans"
DEMO_LABELS = "cube,sphere,cylinder,cone,torus,pyramid,capsule,ring,table,chair,mug,bowl,bottle"
TINY = ["--model", "c2p-tiny", "--pretrained", "none"]
LABELS = "cube,sphere,torus"


# ---------------------------------------------------------------------------------------------
# The CLI and the Python API: the same answer
# ---------------------------------------------------------------------------------------------


def test_cli_and_every_python_entry_give_the_same_answer_on_the_example_scans(tmp_path, capsys, monkeypatch):
    import clip2point

    out = tmp_path / "cli.jsonl"
    r = run_c2p(["classify", SCANS, "--model", "c2p-demo", "--labels", DEMO_LABELS, "-o", out, "-q", "--device", "cpu"],
                capsys, monkeypatch)  # fmt: skip
    assert r.code == 0, r.err
    cli = {Path(row["path"]).name: row for row in map(json.loads, out.read_text().splitlines())}
    assert len(cli) == 8 and all(Path(name).stem == row["label"] for name, row in cli.items())  # the demo's promise

    files = sorted(SCANS.iterdir())
    built = clip2point.classify_files(files, model="c2p-demo", labels=DEMO_LABELS, device="cpu")  # options, not a classifier
    clf = clip2point.load_classifier(labels=DEMO_LABELS, model="c2p-demo", device="cpu")
    given = clip2point.classify_files(files, classifier=clf)
    read = clip2point.classify_points([clip2point.read_cloud(p) for p in files], classifier=clf)
    raw = clip2point.classify_points(np.load(SCANS / "cone.npy"), classifier=clf)  # a raw array: the CLI's defaults
    answers = {"classify_files(options)": {Path(x.path).name: x for x in built},
               "classify_files(classifier)": {Path(x.path).name: x for x in given},
               "classify_points(read_cloud)": dict(zip([p.name for p in files], read, strict=True)),
               "classify_points(np.load)": {"cone.npy": raw[0]}}  # fmt: skip
    for how, got in answers.items():
        for name, x in got.items():
            assert x.label == cli[name]["label"], (how, name)
            want = {t["label"]: t["probability"] for t in cli[name]["top_k"]}
            assert len(x.top_k) == len(want) == 3, how  # top_k: the same default everywhere
            for label, p in x.top_k:
                assert abs(p - want[label]) < 1e-5, (how, name, label)
    # A FileResult is the row the CLI writes.
    assert {Path(x.path).name: x.to_dict() for x in given} == {
        name: {**row, "path": str(SCANS / name)} for name, row in cli.items()}


def test_a_cloud_from_read_cloud_is_not_turned_twice_and_a_raw_array_is():
    import clip2point
    from clip2point.errors import OptionError

    clf = clip2point.load_classifier(labels=LABELS, model="c2p-tiny", pretrained="none", device="cpu")
    cloud = clip2point.read_cloud(SCANS / "cone.npy")
    assert cloud.up == "z"
    as_read = clip2point.classify_points(cloud, classifier=clf)[0]
    again = clip2point.classify_points(cloud, classifier=clf, up="z")[0]  # the same axis: nothing to do twice
    turned_twice = clip2point.classify_points(np.asarray(cloud), classifier=clf)[0]  # np.asarray drops the mark
    assert as_read.probabilities == again.probabilities and turned_twice.probabilities != as_read.probabilities
    with pytest.raises(OptionError, match="not turned again"):
        clip2point.classify_points(cloud, classifier=clf, up="y")


def test_the_api_refuses_a_classifier_and_the_options_that_would_build_another():
    import clip2point
    from clip2point.errors import OptionError

    clf = clip2point.load_classifier(labels=LABELS, model="c2p-tiny", pretrained="none", device="cpu")
    with pytest.raises(OptionError, match=r"classifier or the options that build one \(labels\)"):
        clip2point.classify_files(SCANS, classifier=clf, labels="a,b")
    with pytest.raises(OptionError, match="top_k must be at least 1"):
        clip2point.classify_points(np.ones((3, 3)), classifier=clf, top_k=0)


def test_the_package_lists_its_api():
    import clip2point

    listed = dir(clip2point)
    for name in ("classify_files", "classify_points", "load_classifier", "read_cloud", "describe_run", "load_run_classifier",
                 "FileResult", "Prediction", "load_exported_classifier", "load_adapter_classifier", "__version__"):  # fmt: skip
        assert name in listed, name


def test_cli_and_api_defaults_are_the_table_defaults():
    import inspect

    from clip2point import option_table
    from clip2point.commands.classify import classify
    from clip2point.run_spec import RunSpec

    cli = inspect.signature(classify).parameters
    for name in ("top_k", "batch_size", "seed", "precision", "device", "model", "pretrained", "which"):
        assert cli[name].default == getattr(RunSpec(), name) == option_table.default(name), name
    assert cli["workers"].default is None and RunSpec().workers is None  # one per core, less one, in both


# ---------------------------------------------------------------------------------------------
# Outputs record their run; --resume refuses another one
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_scans(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("two")
    for name in ("cube.ply", "torus.off"):
        (folder / name).write_bytes((SCANS / name).read_bytes())
    return sorted(folder.iterdir())


FIRST = ["--labels", LABELS, *TINY, "--workers", "0", "--device", "cpu", "-q"]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "json"])
def test_an_output_records_its_run_and_an_existing_one_is_refused_untouched(two_scans, tmp_path, capsys, monkeypatch, fmt):
    from clip2point.engine.outputs import read_record

    out = tmp_path / f"r.{fmt}"
    assert run_c2p(["classify", *two_scans, *FIRST, "-o", out], capsys, monkeypatch).code == 0
    described = read_record(out, fmt)
    assert described["labels"] == LABELS.split(",") and described["model"] == "c2p-tiny"
    assert described["weights_id"] == "c2p-tiny/none/seed0" and described["templates"] == ["image of a {}"]
    assert (described["views"], described["n_points"], described["sampling"], described["up"]) == (6, 1024, "random", "z")
    before = out.read_bytes()
    r = run_c2p(["classify", *two_scans, *FIRST, "-o", out], capsys, monkeypatch)
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
    assert "already holds results" in r.err and "--resume" in r.err and "--overwrite" in r.err
    assert out.read_bytes() == before
    r = run_c2p(["classify", *two_scans[:1], *FIRST, "-o", out, "--overwrite"], capsys, monkeypatch)
    assert r.code == 0, r.err
    assert out.read_bytes() != before and str(two_scans[1]) not in out.read_text()  # replaced, not appended to


RESUMED = [  # (what changes, the flag the refusal names)
    (["--labels", "cube,sphere"], "--labels"),
    (["--labels", "torus,sphere,cube"], "--labels in another order"),
    (["--prompt", "a depth map of a {}"], "--prompt"),
    (["--model", "c2p-tiny-rn"], "--model"),
    (["--pretrained", "none", "--model", "c2p-demo"], "--model"),
    (["--views", "10"], "--views"),
    (["--points", "512"], "--points"),
    (["--sampling", "fps"], "--sampling"),
    (["--up", "y"], "--up"),
]


@pytest.mark.parametrize("changed, named", RESUMED, ids=[" ".join(c) for c, _ in RESUMED])
def test_resume_refuses_a_run_with_other_options_naming_each_difference(two_scans, tmp_path, capsys, monkeypatch, changed, named):
    out = tmp_path / "r.jsonl"
    assert run_c2p(["classify", *two_scans, *FIRST, "-o", out], capsys, monkeypatch).code == 0
    before = out.read_bytes()
    args = [*FIRST, *changed]
    r = run_c2p(["classify", *two_scans, *args, "-o", out, "--resume"], capsys, monkeypatch)
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
    assert "holds the results of another run" in r.err and named in r.err, r.err
    assert out.read_bytes() == before


def test_resume_refuses_other_weights_of_the_same_model(two_scans, tmp_path, capsys, monkeypatch):
    out = tmp_path / "r.csv"
    demo = ["--labels", LABELS, "--model", "c2p-demo", "--workers", "0", "--device", "cpu", "-q", "-o", out]
    assert run_c2p(["classify", *two_scans, *demo], capsys, monkeypatch).code == 0
    before = out.read_bytes()
    r = run_c2p(["classify", *two_scans, *demo, "--pretrained", "none", "--resume"], capsys, monkeypatch)
    assert r.code == 2 and "weights c2p-demo/c2p-demo/sha256:" in r.err and "-> c2p-demo/none/seed0" in r.err, r.err
    assert out.read_bytes() == before


def test_resume_of_the_same_run_keeps_every_row_and_drops_files_no_longer_given(two_scans, tmp_path, capsys, monkeypatch):
    out = tmp_path / "r.jsonl"
    assert run_c2p(["classify", *two_scans, *FIRST, "-o", out], capsys, monkeypatch).code == 0
    before = out.read_text()
    r = run_c2p(["classify", *two_scans, *FIRST, "-o", out, "--resume"], capsys, monkeypatch)
    assert r.code == 0 and out.read_text() == before  # every input once, every row kept
    r = run_c2p(["classify", two_scans[1], *FIRST, "-o", out, "--resume"], capsys, monkeypatch)
    assert r.code == 0 and "dropped 1 earlier result(s) of files no longer among the inputs" in r.err
    assert [json.loads(line)["path"] for line in out.read_text().splitlines()] == [str(two_scans[1])]


def test_the_description_of_a_deleted_output_does_not_block_a_new_run(two_scans, tmp_path, capsys, monkeypatch):
    from clip2point.engine.outputs import record_path

    out = tmp_path / "r.jsonl"
    assert run_c2p(["classify", *two_scans, *FIRST, "-o", out], capsys, monkeypatch).code == 0
    out.unlink()
    assert record_path(out).is_file()
    r = run_c2p(["classify", *two_scans, *FIRST, "--labels", "cube,torus", "-o", out], capsys, monkeypatch)
    assert r.code == 0, r.err
    assert json.loads(record_path(out).read_text())["labels"] == ["cube", "torus"]


def test_an_output_without_a_description_is_not_resumed(two_scans, tmp_path, capsys, monkeypatch):
    out = tmp_path / "r.jsonl"
    out.write_text(json.dumps({"path": str(two_scans[0]), "label": "cube"}) + "\n")
    r = run_c2p(["classify", *two_scans, *FIRST, "-o", out, "--resume"], capsys, monkeypatch)
    assert r.code == 2 and "does not say which run wrote it" in r.err and "--overwrite" in r.err


# ---------------------------------------------------------------------------------------------
# Checked once, before anything heavy
# ---------------------------------------------------------------------------------------------


def test_a_classify_run_checks_its_description_once(two_scans, tmp_path, capsys, monkeypatch):
    from clip2point import run_spec

    calls = []
    real = run_spec.validate_options
    monkeypatch.setattr(run_spec, "validate_options", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    r = run_c2p(["classify", *two_scans, *FIRST, "-o", tmp_path / "r.json"], capsys, monkeypatch)
    assert r.code == 0, r.err
    assert len(calls) == 1


def test_a_missing_input_is_reported_without_importing_torch(tmp_path):
    code = (
        "import sys\n"
        f"sys.argv = ['c2p', 'classify', {str(tmp_path / 'nope.ply')!r}, '--labels', 'a,b', '-o', {str(tmp_path / 'r.jsonl')!r}]\n"
        "from clip2point.app import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n    print('EXIT', e.code, 'torch' in sys.modules, 'open_clip' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert "EXIT 1 False False" in r.stdout, r.stdout + r.stderr
    assert "no such file or folder" in (tmp_path / "r.jsonl").read_text()


@pytest.mark.parametrize("args, needle", [
    (["--labels", "Chair,chair "], "'chair' is the same label as 'Chair' for CLIP"),
    (["--labels", LABELS, "--backend", "onnx"], "--backend onnx needs --engine"),
    (["--labels", LABELS, "--engine", "nowhere/"], "--engine nowhere: no such file or folder"),
    (["--labels", LABELS, "--adapter", "nowhere/"], "--adapter nowhere: no such file or folder"),
    (["--labels", LABELS, "--which", "last"], "--which applies to an adapter run only"),
    (["--labels", LABELS, "-o", "r.jsonl", "--resume", "--overwrite"], "--resume or --overwrite, not both"),
])
def test_contradictions_are_refused_before_anything_loads(two_scans, tmp_path, capsys, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    r = run_c2p(["classify", *two_scans, "--model", "no-such-model", *args], capsys, monkeypatch)
    assert r.code == 2 and needle in r.err and "no-such-model" not in r.err, r.err


def test_an_engine_folder_alone_picks_its_backend(tmp_path):
    from clip2point.run_spec import describe_run

    onnx_dir, trt_dir = tmp_path / "onnx", tmp_path / "trt"
    onnx_dir.mkdir()
    trt_dir.mkdir()
    (onnx_dir / "classifier.onnx").write_bytes(b"x")
    (trt_dir / "classifier.engine").write_bytes(b"x")
    assert describe_run(engine=onnx_dir).backend == "onnx"
    assert describe_run(engine=trt_dir).backend == "trt"
    assert describe_run(engine=onnx_dir / "classifier.onnx").backend == "onnx"
    assert describe_run(engine=trt_dir, backend="onnx").backend == "onnx"  # an explicit backend wins


# ---------------------------------------------------------------------------------------------
# Shared options: one declaration, one help text
# ---------------------------------------------------------------------------------------------


def _command_options() -> dict[str, dict[str, str]]:
    """command -> {long flag: help} for every c2p command."""
    import typer.main

    from clip2point.app import app

    group = typer.main.get_command(app)
    found = {}
    for name, command in group.commands.items():
        commands = command.commands.items() if hasattr(command, "commands") else [(None, command)]
        for sub, cmd in commands:
            flags = {}
            for param in cmd.params:
                longs = [o for o in getattr(param, "opts", []) if o.startswith("--")]
                if longs:
                    flags[longs[0]] = param.help or ""
            found[f"{name} {sub}" if sub else name] = flags
    return found


def test_every_shared_option_has_one_flag_and_one_help_on_every_command():
    from clip2point.commands._options import SHARED

    commands = _command_options()
    for spec in SHARED.values():
        flag = spec["flags"][0]
        helps = {cmd: flags[flag] for cmd, flags in commands.items() if flag in flags}
        assert helps, f"{flag} is used by no command"
        assert set(helps.values()) == {spec["help"]}, (flag, helps)
    for cmd in ("classify", "eval", "export", "fewshot", "render"):
        assert "--output" in commands[cmd], cmd  # one spelling of the output everywhere (--out: an alias)
    for cmd in ("eval", "export"):
        assert "--labels-file" in commands[cmd] and "--labels" in commands[cmd]
    assert {"--backend", "--engine", "--top-k", "--workers"} <= set(commands["eval"])


def test_out_stays_an_alias_of_output(tmp_path, capsys, monkeypatch):
    out = tmp_path / "v.png"
    r = run_c2p(["render", SCANS / "cube.ply", "--out", out], capsys, monkeypatch)
    assert r.code == 0 and out.is_file(), r.err
