"""Classify runs that meet real machines: crashing readers, Ctrl-C, resume, outputs checked up front,
pipes, inputs of every kind, labels files, the streaming Python API and torchrun."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from tests.cli_helpers import run_c2p

TINY = ["--model", "c2p-tiny", "--pretrained", "none"]
LABELS = "cube,sphere,torus"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """12 small clouds in three formats, two class folders."""
    from clip2point.synth import write_dataset

    root = tmp_path_factory.mktemp("shapes")
    for fmt, seed in (("ply", 1), ("npy", 2), ("off", 3)):
        write_dataset(root / fmt, classes=["cube", "torus"], per_class=2, test_per_class=0, fmt=fmt, n_points=256, seed=seed)
    return root


@pytest.fixture(scope="module")
def clf():
    from clip2point.models.classifier import load_classifier

    return load_classifier(labels=LABELS, model="c2p-tiny", pretrained="none", device="cpu")


def _files(root: Path) -> list[Path]:
    from clip2point.engine.inputs import gather_inputs

    return [e for e in gather_inputs(root, recursive=True) if isinstance(e, Path)]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _spec(clf, **options):
    """A complete run description for `clf` (as the CLI builds it)."""
    from clip2point.run_spec import complete, describe_run

    return complete(describe_run(needs_labels=False, **options), clf)[0]


def _to_output(clf, entries, out, fmt, *, resume=False, overwrite=False, ctx=None, on_event=None, **options):
    """classify_to_output as `c2p classify -o out` runs it: the output planned first, then the run."""
    from clip2point.engine.outputs import plan_output
    from clip2point.engine.run import classify_to_output
    from clip2point.run_spec import record

    spec = _spec(clf, **options)
    plan = plan_output(out, fmt, resume=resume, overwrite=overwrite, description=record(spec))
    return classify_to_output(clf, entries, spec, plan, ctx=ctx, on_event=on_event)


def _on_result(callback):
    """An event hook that calls `callback(result)` for each new result."""
    return lambda event: callback(event.get("result")) if event.kind == "result" else None


# ---------------------------------------------------------------------------------------------
# A reader that dies costs only its file
# ---------------------------------------------------------------------------------------------


def _die(sig: int) -> None:
    """The reader process kills itself, as the test intends. pytest enables faulthandler and the
    forked reader inherits it: without this it would print a "Fatal Python error" dump for a crash
    nobody needs to debug (the library's readers keep it, so a real crash still shows one)."""
    import faulthandler

    faulthandler.disable()
    os.kill(os.getpid(), sig)


def _dying_reader(victims: dict[str, int]):
    """read_one, except that the reader process kills itself with a signal on the named files."""
    from clip2point.engine import batching

    def read(path, options):
        sig = victims.get(Path(path).name)
        if sig is not None:
            _die(sig)
        return batching.read_one(path, options)

    return read


def test_a_reader_killed_by_a_signal_costs_only_the_file_it_was_reading(shapes, clf, monkeypatch):
    from clip2point.engine import pipeline

    files = _files(shapes)
    victims = {files[3].name: signal.SIGSEGV, files[7].name: signal.SIGKILL}
    monkeypatch.setattr(pipeline, "read_one", _dying_reader(victims))
    results = list(pipeline.classify_files(clf, files, _spec(clf, n_points=128, batch_size=4, workers=2)))
    assert [r.path for r in results] == [str(f) for f in files]
    assert "reader crashed (signal 11, SIGSEGV)" in results[3].error and results[3].error.startswith(str(files[3]))
    assert "reader crashed (signal 9, SIGKILL" in results[7].error
    assert [i for i, r in enumerate(results) if not r.ok] == [3, 7]  # every other file classified
    clean = list(pipeline.classify_files(clf, [f for i, f in enumerate(files) if i not in (3, 7)],
                                         _spec(clf, n_points=128, batch_size=4, workers=0)))
    assert [r.label for i, r in enumerate(results) if i not in (3, 7)] == [r.label for r in clean]


def test_reader_pool_blames_only_the_file_being_read_and_retries_the_rest():
    import threading

    from clip2point.engine.reader_pool import ReaderPool

    def read(name):
        if name == "exit":
            os._exit(3)
        if name == "segv":
            _die(signal.SIGSEGV)
        if name == "lock":
            return threading.Lock()  # cannot be pickled back to the parent
        return name.upper()

    names = ["a", "b", "exit", "c", "d", "segv", "e", "lock", "f", "g"]
    with ReaderPool(2, read, ahead=6) as pool:
        got = list(pool.imap(names))
        assert len(pool.readers) == 2  # replaced after each death
    assert got[2] == ("crashed", "reader process exited unexpectedly (exit code 3)")
    assert got[5] == ("crashed", "reader crashed (signal 11, SIGSEGV)")
    assert got[7][0] == "crashed" and "could not return the result" in got[7][1]
    assert [v for i, (kind, v) in enumerate(got) if i not in (2, 5, 7)] == ["A", "B", "C", "D", "E", "F", "G"]


def test_a_real_reader_crash_still_shows_its_faulthandler_dump(tmp_path):
    """The tests silence only the crashes they cause: the pool keeps a reader's faulthandler, so an
    unexpected segfault in a native parser still prints where it happened."""
    script = (
        "import ctypes, os\n"
        "from clip2point.engine.reader_pool import ReaderPool\n"
        "def read(name):\n"
        "    return ctypes.string_at(0) if name == 'bad' else name\n"
        "with ReaderPool(1, read, ahead=2) as pool:\n"
        "    print(list(pool.imap(['a', 'bad', 'b'])))\n"
    )
    r = subprocess.run([sys.executable, "-X", "faulthandler", "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "('crashed', 'reader crashed (signal 11, SIGSEGV)')" in r.stdout
    assert "Fatal Python error: Segmentation fault" in r.stderr


def test_classify_cli_survives_a_segfaulting_reader_and_exits_1(shapes, tmp_path, capsys, monkeypatch):
    from clip2point.engine import pipeline

    files = _files(shapes)
    monkeypatch.setattr(pipeline, "read_one", _dying_reader({files[5].name: signal.SIGSEGV}))
    out = tmp_path / "r.jsonl"
    r = run_c2p(["classify", shapes, "-r", "--labels", LABELS, *TINY, "-o", out, "--workers", "2", "-b", "4", "-q"],
                capsys, monkeypatch)
    assert r.code == 1, r.err
    rows = _jsonl(out)
    assert len(rows) == len(files) and sum(row["error"] is None for row in rows) == len(files) - 1
    assert "reader crashed (signal 11" in rows[5]["error"]
    assert f"failed {files[5]}: reader crashed (signal 11" in r.err  # listed on stderr even with -q


# ---------------------------------------------------------------------------------------------
# Streaming, Ctrl-C and --resume
# ---------------------------------------------------------------------------------------------

# `c2p` whose reader stalls from the 6th file on, so that Ctrl-C surely comes mid-way (after 2 batches of 2).
# A user's Ctrl-C: the suite may itself run with SIGINT ignored (started in the background by a
# non-interactive shell), which the child would inherit and Python would then leave ignored.
STALLING_CLI = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
    "import clip2point.engine.pipeline as p\n"
    "read, calls = p.read_one, []\n"
    "def stalling(path, options):\n"
    "    calls.append(path)\n"
    "    if len(calls) >= 6:\n"
    "        time.sleep(300)\n"
    "    return read(path, options)\n"
    "p.read_one = stalling\n"
    "from clip2point.app import main\n"
    "sys.argv = ['c2p'] + sys.argv[1:]\n"
    "main()\n"
)


def _c2p(args, **kw) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-c", STALLING_CLI, *map(str, args)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.slow
def test_ctrl_c_keeps_the_finished_rows_and_resume_ends_with_every_file_once(shapes, tmp_path):
    files = _files(shapes)
    out = tmp_path / "r.jsonl"
    common = ["classify", shapes, "-r", "--labels", LABELS, *TINY, "-o", out, "--workers", "0", "-b", "2", "--points", "128"]
    proc = _c2p(common)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 4):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    first = _jsonl(out)
    assert len(first) == 4, err
    assert [row["path"] for row in first] == [str(f) for f in files[: len(first)]]
    assert f"interrupted: {len(first)} of {len(files)} inputs done" in err and "--resume" in err

    r = subprocess.run([sys.executable, "-m", "clip2point", *map(str, common), "--resume"], cwd=ROOT, capture_output=True,
                       text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = _jsonl(out)
    assert [row["path"] for row in rows] == [str(f) for f in files]  # every file exactly once, in input order
    assert rows[: len(first)] == first  # the finished rows were kept, not redone
    assert f"({len(first)} kept from the earlier run)" in r.stderr


def test_resume_redoes_changed_and_failed_files_only(shapes, clf, tmp_path):
    import shutil

    from clip2point.engine.inputs import gather_inputs

    data = tmp_path / "data"
    shutil.copytree(shapes / "ply", data)
    (data / "train" / "cube" / "zz_broken.ply").write_bytes(b"ply\nformat ascii 1.0\nend_header\n")
    out = tmp_path / "r.csv"
    run = dict(n_points=128, batch_size=3, top_k=2, workers=0)
    first = _to_output(clf, gather_inputs(data, recursive=True), out, "csv", **run)
    assert (first.classified, first.reused, first.failed) == (5, 0, 1)
    before = list(csv.DictReader(out.open()))
    changed = Path(before[0]["path"])
    changed.write_bytes(changed.read_bytes())  # same bytes, a new mtime: no longer trusted
    os.utime(changed, ns=(1, 1))
    again = _to_output(clf, gather_inputs(data, recursive=True), out, "csv", resume=True, **run)
    assert (again.classified, again.reused, again.failed) == (2, 3, 1)  # the changed file and the broken one
    after = list(csv.DictReader(out.open()))
    assert [row["path"] for row in after] == [row["path"] for row in before]
    assert after[1:] == before[1:] and after[0]["mtime"] != before[0]["mtime"]


def test_json_output_is_assembled_from_a_sidecar_even_after_ctrl_c(shapes, clf, tmp_path):
    from clip2point.engine.inputs import gather_inputs
    from clip2point.engine.outputs import record_path, sidecar_path
    from clip2point.engine.run import ClassifyInterrupted

    entries = gather_inputs(shapes / "npy", recursive=True)
    out = tmp_path / "deep" / "r.json"
    seen = []

    def interrupt_after_two(r):
        seen.append(r)
        if len(seen) == 2:
            raise KeyboardInterrupt

    run = dict(n_points=128, batch_size=1, workers=0)
    with pytest.raises(ClassifyInterrupted, match="2 of 4 inputs done"):
        _to_output(clf, entries, out, "json", on_event=_on_result(interrupt_after_two), **run)
    doc = json.loads(out.read_text())
    assert doc["meta"]["complete"] is False and len(doc["results"]) == 2
    assert sidecar_path(out).is_file()
    done = _to_output(clf, entries, out, "json", resume=True, **run)
    doc = json.loads(out.read_text())
    assert (done.reused, done.classified) == (2, 2) and doc["meta"]["complete"] is True
    assert doc["meta"]["model"] == "c2p-tiny" and doc["meta"]["run"]["labels"] == LABELS.split(",")
    assert [row["path"] for row in doc["results"]] == [str(e) for e in entries]
    assert not sidecar_path(out).exists() and not record_path(out).exists()  # the meta holds the description


@pytest.mark.parametrize("bad", ["parent_is_a_file", "folder"])
def test_an_unusable_output_fails_before_the_model_loads(shapes, tmp_path, capsys, monkeypatch, bad):
    (tmp_path / "file").write_text("x")
    target = tmp_path / "file" / "r.jsonl" if bad == "parent_is_a_file" else tmp_path
    r = run_c2p(["classify", shapes, "--labels", LABELS, "--model", "no-such-model", "-o", target], capsys, monkeypatch)
    assert r.code == 2 and "--output" in r.err and "no-such-model" not in r.err, r.err


def test_an_output_in_missing_folders_is_created_up_front(shapes, tmp_path, capsys, monkeypatch):
    out = tmp_path / "a" / "b" / "r.jsonl"
    r = run_c2p(["classify", shapes / "npy", "-r", "--labels", LABELS, "--model", "no-such-model", "-o", out], capsys, monkeypatch)
    assert r.code != 0 and "no-such-model" in r.err
    assert out.parent.is_dir() and not list(out.parent.iterdir())  # the test write left nothing behind


# ---------------------------------------------------------------------------------------------
# Output for pipes
# ---------------------------------------------------------------------------------------------


def test_dash_o_dash_writes_only_results_to_stdout(shapes, tmp_path, capsys, monkeypatch):
    (tmp_path / "bad.ply").write_bytes(b"not a ply")
    files = _files(shapes / "npy")
    r = run_c2p(["classify", *files, tmp_path / "bad.ply", "--labels", LABELS, *TINY, "-o", "-", "--workers", "0", "-q"],
                capsys, monkeypatch)
    assert r.code == 1
    rows = [json.loads(line) for line in r.out.splitlines()]  # every stdout line is a result
    assert [row["path"] for row in rows] == [str(f) for f in files] + [str(tmp_path / "bad.ply")]
    assert rows[-1]["error"] and f"failed {tmp_path / 'bad.ply'}:" in r.err  # -q still names the failed file


def test_stdout_defaults_to_jsonl_in_a_pipe_and_takes_csv_and_json(shapes, capsys, monkeypatch):
    files = _files(shapes / "ply")[:3]
    r = run_c2p(["classify", *files, "--labels", LABELS, *TINY, "--workers", "0"], capsys, monkeypatch)
    assert r.code == 0 and [json.loads(line)["path"] for line in r.out.splitlines()] == [str(f) for f in files]
    r = run_c2p(["classify", *files, "--labels", LABELS, *TINY, "--workers", "0", "--format", "csv", "--top-k", "2"],
                capsys, monkeypatch)
    rows = list(csv.DictReader(io.StringIO(r.out)))
    assert r.code == 0 and [row["path"] for row in rows] == [str(f) for f in files] and "label_2" in rows[0]
    r = run_c2p(["classify", *files, "--labels", LABELS, *TINY, "--workers", "0", "--format", "json"], capsys, monkeypatch)
    assert r.code == 0 and len(json.loads(r.out)["results"]) == 3


def test_acceptance_pipe_into_a_json_reader():
    proc = subprocess.run(
        f"{sys.executable} -m clip2point classify examples/scans --labels cube,sphere,torus --model c2p-tiny "
        f"--pretrained none -o - | {sys.executable} -c \"import sys,json; print(len([json.loads(l) for l in sys.stdin]))\"",
        shell=True, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "8", proc.stderr


# ---------------------------------------------------------------------------------------------
# Inputs: globs, stdin, --ext, metadata, unreadable paths
# ---------------------------------------------------------------------------------------------


def test_synth_output_classifies_without_its_metadata(tmp_path, capsys, monkeypatch):
    from clip2point.synth import write_dataset

    write_dataset(tmp_path, classes=["cube", "torus"], per_class=1, test_per_class=1, fmt="ply", n_points=128, seed=0)
    assert (tmp_path / "classes.txt").is_file()
    r = run_c2p(["classify", tmp_path, "-r", "--labels", LABELS, *TINY, "--workers", "0"], capsys, monkeypatch)
    assert r.code == 0, r.err
    assert len(r.out.splitlines()) == 4 and "classes.txt" not in r.out


def test_globs_stdin_lists_and_ext(shapes, tmp_path, capsys, monkeypatch):
    from clip2point.engine.inputs import gather_inputs

    ply = sorted((shapes / "ply").rglob("*.ply"))
    assert gather_inputs(str(shapes / "ply" / "**" / "*.ply")) == ply
    assert [type(e).__name__ for e in gather_inputs(str(tmp_path / "*.nothing"))] == ["FileResult"]
    both = gather_inputs(shapes, recursive=True, extensions="ply,.NPY")
    assert {p.suffix for p in both} == {".ply", ".npy"} and len(both) == 8
    from clip2point.errors import OptionError

    with pytest.raises(OptionError, match="extensions '.docx' is not a supported format"):
        gather_inputs(shapes, extensions="docx")

    listed = [str(p) for p in ply[:2]]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(listed) + "\n\n"))
    r = run_c2p(["classify", "-", str(shapes / "npy" / "*" / "*" / "*.npy"), "--labels", LABELS, *TINY, "--workers", "0"],
                capsys, monkeypatch)
    paths = [json.loads(line)["path"] for line in r.out.splitlines()]
    assert r.code == 0 and paths[:2] == listed and len(paths) == 6 and all(p.endswith(".npy") for p in paths[2:])
    r = run_c2p(["classify", shapes, "-r", "--ext", "off", "--labels", LABELS, *TINY, "--workers", "0"], capsys, monkeypatch)
    assert r.code == 0 and {Path(json.loads(line)["path"]).suffix for line in r.out.splitlines()} == {".off"}
    r = run_c2p(["classify", shapes, "--ext", "docx", "--labels", LABELS, *TINY], capsys, monkeypatch)
    assert r.code == 2 and "--ext '.docx' is not a supported format" in r.err


def test_an_unreadable_subfolder_is_an_error_row(shapes, tmp_path, capsys, monkeypatch):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(shapes / "npy", data)
    locked = data / "train" / "torus"
    real = os.scandir

    def scandir(path="."):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    r = run_c2p(["classify", data, "-r", "--labels", LABELS, *TINY, "--workers", "0"], capsys, monkeypatch)
    rows = [json.loads(line) for line in r.out.splitlines()]
    assert r.code == 1
    assert [row["path"] for row in rows if row["error"]] == [str(locked)]
    assert "cannot read the folder (Permission denied)" in rows[-1]["error"] and len(rows) == 3  # 2 cubes + the folder


def test_an_unreadable_file_on_the_command_line_is_an_error_row_not_exit_2(shapes, tmp_path, capsys, monkeypatch):
    import shutil

    good = _files(shapes / "npy")[0]
    locked = tmp_path / "locked.npy"
    shutil.copy(good, locked)
    locked.chmod(0)
    real = os.access
    # click refused arguments that os.access calls unreadable (exit 2); as root nothing is unreadable, so say it is
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **kw: False if Path(p) == locked else real(p, mode, *a, **kw))
    r = run_c2p(["classify", good, locked, "--labels", LABELS, *TINY, "--workers", "0"], capsys, monkeypatch)
    rows = [json.loads(line) for line in r.out.splitlines()]
    assert r.code in (0, 1), r.err
    assert [row["path"] for row in rows] == [str(good), str(locked)] and rows[0]["error"] is None
    if os.geteuid() != 0:
        assert r.code == 1 and "Permission denied" in rows[1]["error"]


# ---------------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------------


def test_labels_file_and_the_one_label_trap(shapes, tmp_path, capsys, monkeypatch):
    classes = tmp_path / "classes.txt"
    classes.write_text("# shapes\ncube\n\nsphere\ntorus\n")
    files = _files(shapes / "npy")[:2]
    r = run_c2p(["classify", *files, "--labels-file", classes, *TINY, "--workers", "0", "--top-k", "3"], capsys, monkeypatch)
    assert r.code == 0, r.err
    assert {t["label"] for t in json.loads(r.out.splitlines()[0])["top_k"]} == {"cube", "sphere", "torus"}
    r = run_c2p(["classify", *files, "--labels", classes, *TINY], capsys, monkeypatch)
    assert r.code == 2 and "is a file" in r.err and "--labels-file" in r.err
    r = run_c2p(["classify", *files, "--labels", "chair", *TINY], capsys, monkeypatch)
    assert r.code == 2 and "at least two" in r.err
    (tmp_path / "one.txt").write_text("chair\n")
    r = run_c2p(["classify", *files, "--labels-file", tmp_path / "one.txt", *TINY], capsys, monkeypatch)
    assert r.code == 2 and "--labels-file" in r.err and "at least two" in r.err


# ---------------------------------------------------------------------------------------------
# Options checked before anything loads
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, needle", [
    (["--workers", "100000"], "--workers"),
    (["--workers", "-1"], "--workers"),
    (["--batch-size", "0"], "--batch-size"),
    (["--top-k", "0"], "--top-k"),
    (["--precision", "fp8"], "--precision"),
    (["--format", "xml"], "--format"),
    (["--precision", "fp16", "--device", "cpu"], "--precision fp16 needs a CUDA device"),
    (["--resume"], "--resume needs an output file"),
    (["--labels-file", "/no/such/labels.txt"], "--labels-file"),
])
def test_run_options_are_checked_before_the_model_loads(shapes, capsys, monkeypatch, args, needle):
    labels = [] if "--labels-file" in args else ["--labels", LABELS]
    r = run_c2p(["classify", shapes, "-r", *labels, "--model", "no-such-model", *args], capsys, monkeypatch)
    assert r.code == 2 and needle in r.err and "no-such-model" not in r.err, r.err


# ---------------------------------------------------------------------------------------------
# Python API
# ---------------------------------------------------------------------------------------------


def test_classify_files_streams_with_stream_true(shapes, clf):
    import clip2point

    files = _files(shapes / "ply")
    gen = clip2point.classify_files(shapes / "ply", classifier=clf, recursive=True, stream=True, n_points=128)
    assert isinstance(gen, types.GeneratorType)
    first = next(gen)
    assert first.path == str(files[0]) and first.ok
    rest = list(gen)
    listed = clip2point.classify_files(shapes / "ply", classifier=clf, recursive=True, n_points=128)
    assert isinstance(listed, list) and [r.path for r in [first, *rest]] == [r.path for r in listed]
    assert callable(clip2point.load_adapter_classifier) and callable(clip2point.load_exported_classifier)


# ---------------------------------------------------------------------------------------------
# torchrun
# ---------------------------------------------------------------------------------------------


def test_ranks_resume_from_their_own_part_files_and_rank_0_merges_in_input_order(shapes, clf, tmp_path, monkeypatch):
    """Two ranks simulated in one process: the collectives are replaced by a hand-over."""
    from clip2point import distributed
    from clip2point.distributed import DistContext
    from clip2point.engine.inputs import gather_inputs
    from clip2point.engine.outputs import part_path
    from clip2point.engine.run import ClassifyInterrupted

    entries = gather_inputs(shapes / "ply", recursive=True) + gather_inputs(tmp_path / "missing.ply")
    sent = {}
    monkeypatch.setattr(distributed, "barrier", lambda ctx: None)
    monkeypatch.setattr(distributed, "gather_objects",
                        lambda ctx, obj: sent.__setitem__(ctx.rank, obj) or ([sent[0], sent[1]] if ctx.rank == 0 else None))
    out = tmp_path / "r.csv"
    run = dict(n_points=128, batch_size=2, workers=0)
    rank1 = DistContext(rank=1, world_size=2)

    def stop(r):
        raise KeyboardInterrupt

    with pytest.raises(ClassifyInterrupted, match=r"1 of 2 inputs done, they are in .*part-1-of-2"):
        _to_output(clf, entries, out, "csv", ctx=rank1, on_event=_on_result(stop), **run)
    assert len(part_path(out, 1, 2).read_text().splitlines()) == 1
    again = _to_output(clf, entries, out, "csv", ctx=rank1, resume=True, **run)
    assert (again.reused, again.classified, again.is_main) == (1, 1, False) and not out.exists()
    main = _to_output(clf, entries, out, "csv", ctx=DistContext(rank=0, world_size=2), resume=True, **run)
    assert main.total == 5 and main.failed == 1
    single = tmp_path / "single.csv"
    _to_output(clf, entries, single, "csv", **run)
    assert out.read_text() == single.read_text()
    assert not part_path(out, 0, 2).exists() and not part_path(out, 1, 2).exists()


# `c2p` that logs, per rank, which inputs it read: the ranks must share the work, not repeat it.
LOGGING_CLI = """
import os, sys
from pathlib import Path

log = Path(sys.argv.pop(1)) / ("rank" + os.environ.get("RANK", "0") + ".txt")
import clip2point.evaluate as e
import clip2point.engine.pipeline as p

read_one, read_samples = p.read_one, e.read_samples


def logged_read_one(path, options):
    with open(log, "a") as fh:
        fh.write(str(path) + "\\n")
    return read_one(path, options)


def logged_read_samples(dataset, indices):
    indices = list(indices)
    with open(log, "a") as fh:
        fh.writelines(dataset.sample_ids[i] + "\\n" for i in indices)
    return read_samples(dataset, indices)


p.read_one, e.read_samples = logged_read_one, logged_read_samples
from clip2point.app import main

sys.argv = ["c2p"] + sys.argv[1:]
main()
"""


def _torchrun(tmp_path: Path, args: list[str], env: dict) -> tuple[subprocess.CompletedProcess, list[set[str]]]:
    from tests.torchrun_helpers import run_logged_ranks

    r, logs = run_logged_ranks(tmp_path, LOGGING_CLI, args, env)
    reads = [set((logs / f"rank{i}.txt").read_text().split()) if (logs / f"rank{i}.txt").exists() else set() for i in (0, 1)]
    return r, reads


@pytest.mark.slow
def test_two_gloo_ranks_write_exactly_the_single_process_output(shapes, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    common = ["classify", str(shapes), "-r", "--labels", LABELS, *TINY, "--device", "cpu", "-b", "1", "--points", "128",
              "--workers", "0", "-q"]
    single = tmp_path / "single.jsonl"
    r = subprocess.run([sys.executable, "-m", "clip2point", *common, "-o", str(single)], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    ranks = tmp_path / "ranks.jsonl"
    r, reads = _torchrun(tmp_path, [*common, "-o", str(ranks)], env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert ranks.read_text() == single.read_text()
    hidden = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
    assert len(_jsonl(ranks)) == 12 and hidden == [".ranks.jsonl.run.json", ".single.jsonl.run.json"]  # no part left
    assert len(reads[0]) == len(reads[1]) == 6 and not reads[0] & reads[1]  # each rank read its half


@pytest.mark.slow
def test_eval_under_two_gloo_ranks_writes_the_single_process_report(tmp_path):
    from clip2point.synth import write_dataset

    data = tmp_path / "data"
    write_dataset(data, classes=["cube", "torus", "sphere"], per_class=1, test_per_class=3, fmt="npy", n_points=256, seed=4)
    (data / "test" / "cube" / "cube_broken.npy").write_bytes(b"not numpy")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    common = [*TINY, "--device", "cpu", "-b", "1", "--points", "128", "-q"]
    r = subprocess.run([sys.executable, "-m", "clip2point", "eval", str(data), "--out", str(tmp_path / "one"), *common],
                       env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    r, reads = _torchrun(tmp_path, ["eval", str(data), "--out", str(tmp_path / "two"), *common], env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(reads[0]) == 5 and len(reads[1]) == 5 and not reads[0] & reads[1]  # 10 test samples, half each
    one, two = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("one", "two"))
    assert one["n"] == 9 and len(one["skipped"]) == 1
    for key in ("top1", "mean_class_accuracy", "n", "per_class", "confusion", "labels", "skipped", "predictions"):
        assert two[key] == one[key], key


def test_a_run_interrupted_under_two_ranks_resumes_in_one_process(shapes, clf, tmp_path, monkeypatch):
    """Another number of ranks reuses what the parts hold and leaves no stale part file behind."""
    from clip2point import distributed
    from clip2point.distributed import DistContext
    from clip2point.engine.inputs import gather_inputs
    from clip2point.engine.outputs import part_files, part_path
    from clip2point.engine.run import ClassifyInterrupted

    monkeypatch.setattr(distributed, "barrier", lambda ctx: None)
    entries = gather_inputs(shapes / "npy", recursive=True)
    out = tmp_path / "r.jsonl"
    run = dict(n_points=128, batch_size=1, workers=0)

    def stop(r):
        raise KeyboardInterrupt

    with pytest.raises(ClassifyInterrupted):
        _to_output(clf, entries, out, "jsonl", ctx=DistContext(rank=1, world_size=2), on_event=_on_result(stop), **run)
    assert len(part_path(out, 1, 2).read_text().splitlines()) == 1
    resumed = _to_output(clf, entries, out, "jsonl", resume=True, **run)
    assert (resumed.reused, resumed.classified) == (1, len(entries) - 1)
    assert [row["path"] for row in _jsonl(out)] == [str(e) for e in entries] and part_files(out) == []
