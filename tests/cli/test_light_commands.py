"""Commands that need no model start in well under a second: they never import torch, open_clip,
torchvision, triton, open3d nor tensorrt (each checked in a fresh interpreter), and say what the
heavy path says."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "open_clip", "torchvision", "triton", "open3d", "tensorrt")
PROBE = (
    "import runpy, sys\n"
    "sys.argv = ['c2p', *sys.argv[1:]]\n"
    "try:\n    runpy.run_module('clip2point', run_name='__main__')\n"
    "except SystemExit as e:\n    code = e.code\n"
    "else:\n    code = 0\n"
    f"sys.stderr.write('\\nIMPORTED ' + ' '.join(m for m in {HEAVY!r} if m in sys.modules) + '\\n')\n"
    "sys.exit(code)\n"
)


def _probe(*args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    r = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env, timeout=120)
    line = [x for x in r.stderr.splitlines() if x.startswith("IMPORTED")][-1]
    return r, set(line.split()[1:])


@pytest.mark.parametrize("args", [["--help"], ["models"], ["models", "--filter", "ViT-B", "--pretrained"],
                                  ["label-sets"], ["label-sets", "modelnet10", "--json"]], ids=" ".join)  # fmt: skip
def test_commands_without_a_model_import_nothing_heavy(args):
    r, imported = _probe(*args)
    assert r.returncode == 0, r.stderr
    assert not imported, f"c2p {' '.join(args)} imported {sorted(imported)}"


def test_models_lists_what_open_clip_lists_without_importing_it():
    """The torch-free listing (open_clip's JSON configs, its pretrained table read on its own) is
    open_clip's registry: every name in its order, every weight tag, the shipped ones added."""
    from clip2point.models.encoders import register_model_configs
    from clip2point.models.open_clip_import import import_open_clip
    from clip2point.models.shipped import shipped_tags

    r, imported = _probe("models", "--pretrained", "--json")
    assert r.returncode == 0 and "torch" not in imported, r.stderr
    rows = json.loads(r.stdout)["models"]
    open_clip = import_open_clip()
    register_model_configs()
    assert [row["name"] for row in rows] == open_clip.list_models()
    for row in rows:
        assert row["pretrained"] == [*open_clip.list_pretrained_tags_by_model(row["name"]), *shipped_tags(row["name"])]
    by_name = {row["name"]: row for row in rows}
    assert by_name["c2p-demo"]["shipped"] == ["c2p-demo"] and by_name["c2p-tiny"]["tiny"]
    assert "openai" in by_name["ViT-B-32"]["pretrained"]


def test_env_json_reports_cpu_bf16_without_importing_torch_when_no_gpu_driver_is_visible():
    from clip2point.commands._environment import gpu_driver_visible
    from clip2point.models.precision import cpu_bf16

    r, imported = _probe("env", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["cpu_bf16"]["native"] == cpu_bf16()["native"]
    assert doc["torch"]["version"] and doc["torch"]["cuda_available"] in (True, False)
    if gpu_driver_visible():
        pytest.skip("a GPU driver is visible: env imports torch to list the devices")
    assert {"torch", "open_clip"}.isdisjoint(imported) and doc["torch"]["imported"] is False
    assert doc["torch"]["cuda_available"] is False and doc["torch"]["note"].startswith("not imported")
