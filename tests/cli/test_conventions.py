"""CLI conventions: -h, completion, choices, examples in every help, C2P_* defaults, logging,
progress lines off a terminal, and the models / label-sets / env / cache commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli_helpers import run_c2p

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--model", "c2p-tiny", "--pretrained", "none"]


def _commands() -> list[list[str]]:
    from clip2point.app import COMMANDS

    return [[name] for name, *_ in COMMANDS] + [["cache", "ls"], ["cache", "rm"], ["cache", "prune"]]


def _c2p(args, env=None, **kw) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "clip2point", *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=120, **kw)  # fmt: skip


# --- help, examples, completion --------------------------------------------------------------


@pytest.mark.parametrize("command", _commands(), ids=lambda c: " ".join(c))
def test_every_command_takes_dash_h_and_ends_its_help_with_examples(command, capsys, monkeypatch):
    r = run_c2p([*command, "-h"], capsys, monkeypatch)
    assert r.code == 0, r.err
    assert "c2p " + " ".join(command) + " [OPTIONS]" in r.out  # (in-process, click prefixes the interpreter)
    tail = r.out[r.out.rindex("Examples"):]
    examples = [line for line in tail.splitlines()[1:] if line.strip().startswith(("c2p ", "torchrun "))]
    assert 2 <= len(examples) <= 3, tail
    assert r.out.rindex("Examples") > r.out.rindex("--help")  # the examples close the help


def test_root_help_lists_the_new_commands_and_completion(capsys, monkeypatch):
    r = run_c2p(["-h"], capsys, monkeypatch)
    assert r.code == 0
    for word in ("models", "label-sets", "env", "cache", "--install-completion", "--show-completion", "--verbose", "--log-level"):
        assert word in r.out


def test_shell_completion_script_and_choices():
    script = _c2p(["--show-completion", "bash"])
    assert script.returncode == 0 and "_C2P_COMPLETE=complete_bash" in script.stdout
    env = {"_C2P_COMPLETE": "complete_bash", "COMP_WORDS": "c2p classify --backend ", "COMP_CWORD": "3"}
    assert _c2p([], env=env).stdout.split() == ["torch", "onnx", "trt"]
    env = {"_C2P_COMPLETE": "complete_bash", "COMP_WORDS": "c2p classify --label-set model", "COMP_CWORD": "3"}
    assert set(_c2p([], env=env).stdout.split()) == {"modelnet40", "modelnet10"}


# --- fixed choices -------------------------------------------------------------------------------


def test_fixed_choices_are_shown_and_other_values_refused_in_one_line(capsys, monkeypatch):
    r = run_c2p(["classify", "-h"], capsys, monkeypatch)
    for choices in ("torch|onnx|trt", "random|fps", "z|y", "auto|cpu|cuda|cuda:N"):
        assert choices in r.out, choices
    for args, flag in ((["--backend", "tensorflow"], "--backend"), (["--up", "x"], "--up"), (["--sampling", "grid"], "--sampling"),
                       (["--device", "gpu"], "--device")):  # fmt: skip
        r = run_c2p(["classify", "x.ply", *args], capsys, monkeypatch)
        assert r.code == 2 and flag in r.err and len(r.err.strip().splitlines()) == 1, r.err
    for command, choices in ((["fewshot"], ("gated|mean", "last|val|test", "obj_bg|obj_only|pb_t50_rs")),
                             (["eval"], ("best|last", "train|test")), (["pretrain"], ("adamw|lamb", "auto|c2p|clip2point")),
                             (["export"], ("none|int8",))):  # fmt: skip
        out = run_c2p([*command, "-h"], capsys, monkeypatch).out
        assert all(c in out for c in choices), (command, choices)


def test_choices_reach_the_library_as_plain_strings():
    from clip2point.commands._common import plain
    from clip2point.commands._options import Backend, UpAxisChoice

    assert plain(Backend.onnx) == "onnx" and type(plain(Backend.onnx)) is str
    assert plain([UpAxisChoice.y]) == ["y"] and f"{Backend.trt}" == "trt"


def test_device_takes_numbered_gpus_and_normalises_them():
    from clip2point.commands._options import normalise_device

    assert [normalise_device(s) for s in ("AUTO", " cpu", "cuda", "cuda:0", "CUDA:12")] == ["auto", "cpu", "cuda", "cuda:0", "cuda:12"]
    assert [normalise_device(s) for s in ("gpu", "cuda:", "cuda:x", "cuda:-1", "mps")] == [None] * 5


def test_dataset_choices_follow_the_dataset_readers():
    from clip2point.commands._options import DatasetKind
    from clip2point.training.datasets import KIND_ALIASES, KINDS

    assert [k.value for k in DatasetKind] == [*KINDS, *KIND_ALIASES]


# --- environment variables -----------------------------------------------------------------------


def test_c2p_variables_set_option_defaults(tmp_path, capsys, monkeypatch):
    import numpy as np

    from clip2point.io import write_ply
    from clip2point.synth import random_cloud

    path = tmp_path / "cube.ply"
    write_ply(path, random_cloud("cube", np.random.default_rng(0), 300))
    out = tmp_path / "r.json"
    for name, value in (("C2P_MODEL", "c2p-tiny"), ("C2P_PRETRAINED", "none"), ("C2P_DEVICE", "cpu"), ("C2P_WORKERS", "0")):
        monkeypatch.setenv(name, value)
    r = run_c2p(["classify", path, "--labels", "cube,torus", "-o", out, "-q"], capsys, monkeypatch)
    assert r.code == 0, r.err
    assert json.loads(out.read_text())["meta"]["model"] == "c2p-tiny"
    monkeypatch.setenv("C2P_DEVICE", "gpu")
    r = run_c2p(["classify", path, "--labels", "cube,torus"], capsys, monkeypatch)
    assert r.code == 2 and "--device must be one of" in r.err and "$C2P_DEVICE" in r.err
    r = run_c2p(["classify", "-h"], capsys, monkeypatch)
    assert "C2P_MODEL" in r.out and "C2P_DEVICE" in r.out


# --- logging ----------------------------------------------------------------------------------------


def test_verbose_and_log_level_attach_the_c2p_loggers_to_stderr(capsys, monkeypatch):
    import logging

    try:
        quiet = run_c2p(["label-sets"], capsys, monkeypatch)
        assert "c2p.cli" not in quiet.err
        assert "c2p.cli" not in run_c2p(["label-sets", "-v"], capsys, monkeypatch).err  # -v is info; this is debug
        for args in (["label-sets", "-vv"], ["-vv", "label-sets"], ["label-sets", "--log-level", "DEBUG"]):
            r = run_c2p(args, capsys, monkeypatch)
            assert r.code == 0 and "DEBUG c2p.cli: label_sets" in r.err, args
        logging.getLogger("c2p.export").info("from a library module")
        assert "INFO c2p.export: from a library module" in capsys.readouterr().err
    finally:
        from clip2point.commands._common import configure_logging

        configure_logging(log_level="warning")


# --- progress off a terminal ----------------------------------------------------------------------


def test_progress_prints_lines_when_stderr_is_not_a_terminal():
    import io

    from rich.console import Console

    from clip2point.commands._progress import LineProgress, progress_bar

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=False, width=200)
    with progress_bar(console, "[bold]{task.description}", info=True, interval=0) as p:
        assert isinstance(p, LineProgress)
        task = p.add_task("training", total=4, info="")
        for _ in range(4):
            p.update(task, advance=1, info="loss 0.5")
    lines = buffer.getvalue().splitlines()
    assert lines[0].startswith("training: 1/4 (25.0%)") and "loss 0.5" in lines[0]
    assert lines[-1].startswith("training: 4/4 (100.0%)") and len(lines) == 4  # finished once, no repeat at exit
    assert "\x1b" not in buffer.getvalue() and "━" not in buffer.getvalue()  # no bar drawing

    buffer = io.StringIO()
    with progress_bar(Console(file=buffer, force_terminal=False), "classifying", interval=3600) as p:
        task = p.add_task("classify", total=10)
        p.advance(task, 3)
    assert buffer.getvalue().splitlines() == [buffer.getvalue().splitlines()[0]]
    assert buffer.getvalue().startswith("classifying: 3/10 (30.0%)")  # the state at the end, once

    terminal = progress_bar(Console(file=io.StringIO(), force_terminal=True))
    assert type(terminal).__name__ == "Progress"


def test_progress_lines_keep_coming_while_nothing_advances():
    import io

    from rich.console import Console

    from clip2point.commands._progress import progress_bar

    buffer = io.StringIO()
    with progress_bar(Console(file=buffer, force_terminal=False), "waiting", interval=0.05) as p:
        p.add_task("w", total=2)
        deadline = time.monotonic() + 30
        while buffer.getvalue().count("\n") < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert buffer.getvalue().count("waiting: 0/2") >= 2


def test_classify_logs_progress_lines_into_a_non_terminal_stderr(tmp_path, capsys, monkeypatch):
    from clip2point.synth import write_dataset

    write_dataset(tmp_path / "d", classes=["cube", "torus"], per_class=2, test_per_class=0, fmt="npy", n_points=256, seed=0)
    r = run_c2p(["classify", tmp_path / "d" / "train", "-r", "--labels", "cube,torus", *TINY, "--workers", "0", "--device", "cpu"],
                capsys, monkeypatch)  # fmt: skip
    assert r.code == 0, r.err
    assert "classifying: 4/4 (100.0%)" in r.err and "━" not in r.err


# --- models, label-sets, env -------------------------------------------------------------------------


def test_models_lists_open_clip_and_the_tiny_configs_offline():
    r = _c2p(["models"], env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr
    names = [line.split()[0] for line in r.stdout.splitlines()]
    assert {"ViT-B-32", "RN50", "c2p-tiny", "c2p-tiny-rn"} <= set(names)
    tiny = json.loads(_c2p(["models", "--filter", "C2P-TINY", "--json"]).stdout)["models"]
    assert [m["name"] for m in tiny] == ["c2p-tiny", "c2p-tiny-rn"] and all(m["tiny"] for m in tiny)
    demo = json.loads(_c2p(["models", "--filter", "c2p-demo", "--json", "--pretrained"]).stdout)["models"]
    assert demo == [{"name": "c2p-demo", "pretrained": ["c2p-demo"], "shipped": ["c2p-demo"], "tiny": False}]
    assert "--pretrained c2p-demo" in _c2p(["models", "--filter", "c2p-demo"]).stdout
    tags = json.loads(_c2p(["models", "-f", "ViT-B-32", "--pretrained", "--json"]).stdout)["models"]
    assert "openai" in next(m for m in tags if m["name"] == "ViT-B-32")["pretrained"]
    assert _c2p(["models", "-f", "no-such-architecture"]).returncode == 1


def test_label_sets_reads_the_sets_at_run_time(capsys, monkeypatch):
    from clip2point.models import prompts

    monkeypatch.setitem(prompts.LABEL_SETS, "kitchen", ("mug", "kettle", "pan"))
    r = run_c2p(["label-sets"], capsys, monkeypatch)
    assert r.code == 0
    listed = {line.split()[0]: int(line.split()[1]) for line in r.out.splitlines()}
    assert listed == {name: len(labels) for name, labels in prompts.LABEL_SETS.items()}
    r = run_c2p(["label-sets", "kitchen"], capsys, monkeypatch)
    assert r.out.splitlines() == ["mug", "kettle", "pan"]
    doc = json.loads(run_c2p(["label-sets", "--json"], capsys, monkeypatch).out)
    assert doc["modelnet10"] == list(prompts.LABEL_SETS["modelnet10"])
    r = run_c2p(["label-sets", "nope"], capsys, monkeypatch)
    assert r.code == 2 and "modelnet40" in r.err


def test_env_reports_versions_and_backends_offline():
    r = _c2p(["env"], env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr
    for needle in ("- torch: ", "CUDA available:", "triton:", "open_clip_torch:", "onnxruntime:", "tensorrt:",
                   "classify onnx: yes", "render triton:", "export int8:"):  # fmt: skip
        assert needle in r.stdout, needle
    doc = json.loads(_c2p(["env", "--json"]).stdout)
    assert doc["packages"]["torch"] and set(doc["backends"]) >= {"render torch", "classify onnx", "tensorrt"}


def test_env_survives_missing_and_broken_optional_packages(tmp_path):
    """triton raising at import, onnxruntime missing, a TensorRT too old: reported, exit 0."""
    shim = tmp_path / "shim"
    (shim / "triton").mkdir(parents=True)
    (shim / "triton" / "__init__.py").write_text("raise RuntimeError('libcuda.so: cannot open shared object file')\n")
    (shim / "tensorrt").mkdir()
    (shim / "tensorrt" / "__init__.py").write_text("__version__ = '8.6.1'\n")
    (shim / "sitecustomize.py").write_text("import sys\nsys.modules['onnxruntime'] = None\n")
    env = {"PYTHONPATH": os.pathsep.join([str(shim), str(ROOT)])}
    r = _c2p(["env"], env=env)
    assert r.returncode == 0, r.stderr
    assert "render triton: no: triton RuntimeError: libcuda.so" in r.stdout
    assert "classify onnx: no: onnxruntime not installed" in r.stdout
    assert "tensorrt: no: TensorRT 8.6.1 is older than 10" in r.stdout


# --- cache -------------------------------------------------------------------------------------------


def _sparse(path: Path, size: int, age_days: float = 0.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)
    when = time.time() - age_days * 86400
    os.utime(path, (when, when))


def test_cache_ls_rm_prune(tmp_path, capsys, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("C2P_CACHE_DIR", str(root))
    r = run_c2p(["cache", "ls", "--json"], capsys, monkeypatch)
    assert r.code == 0 and json.loads(r.out)["caches"] == [] and not root.exists()  # listing creates nothing
    a, b, x = "a" * 64 + ".safetensors", "b" * 64 + ".safetensors", "0" * 24 + ".safetensors"  # c2p's names
    _sparse(root / "text_features" / a, 3 << 20, age_days=40)
    _sparse(root / "text_features" / b, 1 << 20)
    _sparse(root / "features" / x, 5 << 20, age_days=2)
    _sparse(root / "features" / f".{x}.k3_9z.tmp", 100, age_days=1)  # left by a killed write
    outside = tmp_path / "keep.bin"
    _sparse(outside, 10)
    (root / "features" / "link").symlink_to(outside)

    doc = json.loads(run_c2p(["cache", "ls", "--json"], capsys, monkeypatch).out)
    sizes = {c["name"]: (c["files"], c["bytes"]) for c in doc["caches"]}
    assert sizes == {"text_features": (2, 4 << 20), "features": (2, (5 << 20) + 100)}  # the link is not c2p's
    table = run_c2p(["cache", "ls"], capsys, monkeypatch).out
    assert "text_features" in table and "4.0 MiB" in table and "9.0 MiB" in table

    r = run_c2p(["cache", "prune", "--older-than", "30", "--dry-run"], capsys, monkeypatch)
    assert r.code == 0 and "would remove 2 file(s)" in r.err and (root / "text_features" / a).exists()
    r = run_c2p(["cache", "prune", "--older-than", "30"], capsys, monkeypatch)
    assert "removed 2 file(s), 3.0 MiB" in r.err  # the 40-day file and the day-old temp file
    assert not (root / "text_features" / a).exists() and outside.exists()
    r = run_c2p(["cache", "prune", "--max-size", "2M"], capsys, monkeypatch)
    assert r.code == 0 and not (root / "features" / x).exists()  # least recently used goes first
    assert (root / "text_features" / b).exists()

    r = run_c2p(["cache", "rm", "nope"], capsys, monkeypatch)
    assert r.code == 2 and "no cache named 'nope'" in r.err
    r = run_c2p(["cache", "rm", "text_features"], capsys, monkeypatch)
    assert r.code == 0 and not (root / "text_features").exists() and (root / "features").exists()
    r = run_c2p(["cache", "rm", "--all"], capsys, monkeypatch)
    doc = json.loads(run_c2p(["cache", "ls", "--json"], capsys, monkeypatch).out)
    assert r.code == 0 and [(c["name"], c["files"], c["not_c2p"]) for c in doc["caches"]] == [("features", 0, 1)]
    assert (root / "features" / "link").is_symlink() and outside.exists()  # kept: c2p did not write it
    for args in (["cache", "rm"], ["cache", "prune"], ["cache", "prune", "--max-size", "lots"], ["cache", "prune", "--older-than", "-1"]):
        assert run_c2p(args, capsys, monkeypatch).code == 2, args


def test_sizes_parse_and_print():
    from clip2point.store.caches import human_size, parse_size

    assert [parse_size(s) for s in ("4096", "2K", "1.5GiB", "500mb", "3 G")] == [4096, 2048, 3 << 29, 500 << 20, 3 << 30]
    assert [human_size(n) for n in (0, 512, 1536, 2 << 30)] == ["0 B", "512 B", "1.5 KiB", "2.0 GiB"]
