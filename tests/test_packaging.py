"""One installed namespace (`clip2point`), the library's floors, and `python -m clip2point`.

The source folders keep the names the user gave them (c2p_cli/ kernels/ training/ export/); a
wheel must install them as clip2point, clip2point.kernels, clip2point.training and
clip2point.export, and never as generic top-level packages that collide with users' own.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.source_tree import ROOT, imported, module_name

# source folder -> installed package
FOLDERS = {"c2p_cli": "clip2point", "kernels": "clip2point/kernels", "training": "clip2point/training",
           "export": "clip2point/export"}
DECOYS = ("training", "export", "kernels", "c2p_cli")


def _source_modules() -> dict[str, Path]:
    """installed path (clip2point/...) -> source file, for every module and packaged data file."""
    out = {}
    for folder, installed in FOLDERS.items():
        for path in (ROOT / folder).rglob("*"):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            rel = path.relative_to(ROOT / folder)
            data = {"model_configs": ".json", "weights": ".safetensors"}  # package data (pyproject)
            if path.suffix == ".py" or (folder == "c2p_cli" and data.get(rel.parts[0]) == path.suffix):
                out[f"{installed}/{rel.as_posix()}"] = path
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True, capture_output=True, cwd=out,
    )
    (found,) = out.glob("clip2point-*.whl")
    return found


@pytest.mark.slow
def test_the_wheel_installs_one_namespace_and_every_module(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"clip2point", next(t for t in tops if t.endswith(".dist-info"))}, tops
    missing = sorted(set(_source_modules()) - set(names))
    assert not missing, f"modules left out of the wheel (a package missing from pyproject?): {missing}"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "c2p = clip2point.app:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


@pytest.mark.slow
def test_installed_files_and_imports_survive_decoy_packages(wheel, tmp_path):
    """Install the wheel (not editable) into a folder, put decoy training/export/kernels packages
    first on sys.path, and import and run the library from there."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    decoys = tmp_path / "project"
    for name in DECOYS:
        (decoys / name).mkdir(parents=True)
        (decoys / name / "__init__.py").write_text(f"raise ImportError('the decoy {name} package was imported')\n")
    code = """
import importlib.metadata as md, json, sys
import clip2point, clip2point.kernels, clip2point.training, clip2point.export
import clip2point.training.fewshot, clip2point.training.pretrain, clip2point.export.onnx, clip2point.evaluate
files = [str(f) for f in md.files("clip2point")]
print(json.dumps({"files": files, "where": clip2point.training.__file__,
                  "top": sorted({f.split("/")[0] for f in files})}))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(decoys), str(target)])}
    proc = subprocess.run([sys.executable, "-c", code], cwd=decoys, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert Path(info["where"]).is_relative_to(target)
    assert not {"training", "export", "kernels", "c2p_cli"} & set(info["top"]), info["top"]
    assert "clip2point/training/fewshot.py" in info["files"]

    # The command itself, run from the decoy folder (cwd is first on sys.path for -m).
    scan = ROOT / "examples" / "scans" / "cube.ply"
    run = subprocess.run(
        [sys.executable, "-m", "clip2point", "classify", str(scan), "--labels", "cube,sphere", "--model", "c2p-tiny",
         "--pretrained", "none", "-o", str(tmp_path / "r.jsonl")],
        cwd=decoys, env={**env, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
    )
    assert run.returncode == 0, run.stderr
    (row,) = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert row["label"] in ("cube", "sphere") and row["error"] is None


def test_python_m_clip2point_runs_the_cli():
    proc = subprocess.run([sys.executable, "-m", "clip2point", "--version"], capture_output=True, text=True, cwd=ROOT / "tests")
    assert proc.returncode == 0 and proc.stdout.startswith("c2p "), proc.stderr


# ---------------------------------------------------------------------------------------------
# Floors: the core imports nothing from training, export or the CLI
# ---------------------------------------------------------------------------------------------

FORBIDDEN = ("clip2point.training", "clip2point.export", "clip2point.commands", "clip2point.app")


def _core_files() -> list[Path]:
    core = ROOT / "c2p_cli"
    return sorted(p for p in core.rglob("*.py")
                  if "commands" not in p.relative_to(core).parts and p.name not in ("app.py", "__main__.py"))


def _offences(source: str, module: str, is_package: bool = False) -> list[str]:
    out = []
    for line, name in imported(source, module, is_package):
        if name.split(".")[0] in ("training", "export", "kernels", "c2p_cli") or any(
            name == f or name.startswith(f + ".") for f in FORBIDDEN
        ):
            out.append(f"{line}: {name}")
    return out


def test_the_core_never_imports_the_trainer_the_exporter_or_the_cli():
    offences = []
    for path in _core_files():
        found = _offences(path.read_text(), module_name(path), path.name == "__init__.py")
        offences += [f"{path.relative_to(ROOT)}:{o}" for o in found]
    assert not offences, "\n".join(offences)


def test_the_package_root_is_the_only_lazy_door_to_an_upper_floor():
    """`clip2point.load_exported_classifier` is offered at the package root for users and
    imported from clip2point.export only when asked for. No other core module names a module of an
    upper floor, not even as a string handed to importlib."""
    import re

    upper = re.compile(r"^clip2point\.(training|export|commands|app)(\.\w+)*$")
    found = set()
    for path in _core_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and upper.match(node.value):
                found.add((path.relative_to(ROOT).as_posix(), node.value))
    assert found == {("c2p_cli/__init__.py", "clip2point.export.runtime")}, found
    import clip2point

    assert clip2point._LAZY["load_exported_classifier"] == "clip2point.export.runtime"


def test_the_layering_rule_resolves_relative_and_nested_imports():
    assert _offences("from ..training.fewshot import run\n", "clip2point.models.classifier") == [
        "1: clip2point.training.fewshot", "1: clip2point.training.fewshot.run"]
    assert _offences("def f():\n    from ..commands import eval\n", "clip2point.io.ply") == [
        "2: clip2point.commands", "2: clip2point.commands.eval"]
    assert _offences("from . import export\n", "clip2point", is_package=True) == ["1: clip2point.export"]
    assert _offences("import training.pretrain\n", "clip2point.api") == ["1: training.pretrain"]
    assert _offences("from .kernels import render_depth\nfrom .io import read_cloud\n", "clip2point.api") == []


# ---------------------------------------------------------------------------------------------
# Library messages name Python options; the CLI names its flags
# ---------------------------------------------------------------------------------------------


def test_option_errors_read_as_python_in_the_library_and_as_flags_in_the_cli():
    from clip2point.commands._messages import cli_text
    from clip2point.errors import Opt, OptionError
    from clip2point.run_spec import describe_run

    with pytest.raises(OptionError) as info:
        describe_run(batch_size=0, needs_labels=False)
    assert str(info.value) == "batch_size must be between 1 and 65536, got 0"
    assert cli_text(info.value) == "--batch-size must be between 1 and 65536, got 0"
    e = OptionError("use ", Opt("select", "last"), " or more ", Opt("n_points"), " with {braces} kept")
    assert str(e) == "use select='last' or more n_points with {braces} kept"
    assert cli_text(e) == "use --select last or more --points with {braces} kept"


# `--` then a letter (or an f-string field): a flag, wherever the string is built.
FLAG = re.compile(r"(?<![\w-])--(?=[a-z{])")


def _flag_mentions(source: str) -> list[tuple[int, str]]:
    """(line, text) of every string literal of `source` that names a `--flag`, docstrings aside.
    f-strings are read whole (fields as `{}`), so `f"--{key}"` counts; a string that names a c2p
    command line ("c2p export --trt") tells a user which command to run and is allowed."""
    tree = ast.parse(source)
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                skip.add(id(first.value))
        if isinstance(node, ast.JoinedStr):
            skip |= {id(v) for v in node.values}
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        else:
            continue
        if FLAG.search(text) and "c2p " not in text and "c2p: --" not in text:
            found.append((node.lineno, text))
    return found


def test_the_flag_scan_reads_whole_functions():
    leak = (
        "def check(saved, cfg, keys):\n"
        "    \"\"\"Compares --options (a docstring may name flags).\"\"\"\n"
        "    names = [f\"--{k.replace('_', '-')}\" for k in keys if saved[k] != cfg[k]]\n"
        "    raise UsageError('saved with ' + ', '.join(names))\n"
    )
    assert _flag_mentions(leak) == [(3, "--{}")]
    assert _flag_mentions("def f():\n    return 'use --batch-size'\n") == [(2, "use --batch-size")]
    assert _flag_mentions("HINT = 'rebuild it with c2p export --trt'\nX = 'a -- b'\n") == []


def test_library_messages_do_not_name_cli_flags():
    """The core, the trainer and the exporter name Python options, not `--flags`: any string they
    build (inside a raise or not) that names a flag is one leaking into the library."""
    offences = []
    folders = [ROOT / "c2p_cli", ROOT / "training", ROOT / "kernels", ROOT / "export"]
    for folder in folders:
        for path in folder.rglob("*.py"):
            if "commands" in path.parts or path.name in ("app.py", "run_onnx.py"):
                continue
            offences += [f"{path.relative_to(ROOT)}:{line}: {text!r}" for line, text in _flag_mentions(path.read_text())]
    assert not offences, "\n".join(offences)
