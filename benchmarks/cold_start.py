"""Cold start: a one-file `c2p classify` beside `python -c "import torch"`, and where its time goes.

Every measurement is a fresh interpreter, and the measurements alternate (round 1: all of them,
round 2: all of them, ...), so that load on a shared machine hits each alike; each reports its
median and fastest round, in wall time and in CPU time (user + system of the process and the
reader it forks: the work itself, which other jobs do not change much).

- `python -c "pass"` and `python -c "import torch"`: the floor and the yardstick.
- `c2p classify FILE --model c2p-demo --labels ...`: the whole command, output to /dev/null.
- `phases`: the same work in one script, timed by phase: import torch, import open_clip (as
  clip2point imports it), the rest of clip2point's imports, building the classifier (weights, text
  features: cached after the first round, as for a user's second run), classifying the file.
- `c2p models`, `c2p label-sets`, `c2p env --json`, `c2p --help`: commands that need no model;
  `torch_imported` says whether torch was imported (it should not be).

Prints one JSON object; `classify_over_import_torch` is the figure of merit (target: at most 2).
    python benchmarks/cold_start.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LABELS = "cube,sphere,cylinder,cone,torus,pyramid,capsule,ring,table,chair,mug,bowl,bottle"

PHASES = r"""
import json, sys, time
marks = [("start", time.perf_counter(), time.process_time())]
def mark(name):
    marks.append((name, time.perf_counter(), time.process_time()))
import torch
mark("import_torch")
from clip2point.models.open_clip_import import import_open_clip
import_open_clip()
mark("import_open_clip")
from clip2point.engine.pipeline import classify_files
from clip2point.models.classifier import load_classifier
mark("import_clip2point")
clf = load_classifier(labels=sys.argv[2], model="c2p-demo")
mark("build_classifier")
rows = list(classify_files(clf, [sys.argv[1]]))
assert rows[0].ok, rows[0].error
mark("classify_file")
print(json.dumps({b[0]: [round(b[1] - a[1], 3), round(b[2] - a[2], 3)] for a, b in zip(marks, marks[1:])}))
print(json.dumps({"heavy_modules": sorted(m for m in ("torchvision", "timm", "torch._dynamo") if m in sys.modules)}))
"""

# Modules that a command which needs no model should never import.
PROBE = r"""
import runpy, sys
sys.argv = ["c2p", *sys.argv[1:]]
try:
    runpy.run_module("clip2point", run_name="__main__")
except SystemExit:
    pass
finally:
    sys.stderr.write("\nC2P_MODULES " + " ".join(m for m in ("torch", "open_clip", "triton", "open3d", "tensorrt") if m in sys.modules) + "\n")
"""


def run(cmd: list[str]) -> dict:
    """Wall and CPU seconds (of the process and the children it waited for) and output of one fresh process."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, cwd=ROOT, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return {"wall": wall, "cpu": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
            # ru_maxrss of the children is a running maximum: this is the largest so far
            "rss_mb": after.ru_maxrss / 1024, "out": out.stdout, "err": out.stderr}  # fmt: skip


def commands(file: str) -> dict[str, list[str]]:
    py = sys.executable
    c2p = [py, "-m", "clip2point"]
    probe = [py, "-c", PROBE]
    return {
        "python_pass": [py, "-c", "pass"],
        "import_torch": [py, "-c", "import torch"],
        "classify": [*c2p, "classify", file, "--model", "c2p-demo", "--labels", LABELS, "-q", "-o", "-"],
        "phases": [py, "-c", PHASES, file, LABELS],
        "models": [*probe, "models"],
        "label_sets": [*probe, "label-sets"],
        "env_json": [*probe, "env", "--json"],
        "help": [*probe, "--help"],
    }


def summarise(samples: list[dict]) -> dict:
    walls, cpus = [s["wall"] for s in samples], [s["cpu"] for s in samples]
    out = {"wall_s_median": round(statistics.median(walls), 3), "wall_s_best": round(min(walls), 3),
           "cpu_s_median": round(statistics.median(cpus), 3)}
    modules = [line.split()[1:] for s in samples for line in s["err"].splitlines() if line.startswith("C2P_MODULES")]
    if modules:
        out["heavy_imports"] = sorted({m for found in modules for m in found})
        out["torch_imported"] = "torch" in out["heavy_imports"]
    return out


def phase_table(samples: list[dict]) -> dict:
    rows = [json.loads(s["out"].splitlines()[0]) for s in samples]
    table = {name: {"wall_s_median": round(statistics.median(r[name][0] for r in rows), 3),
                    "cpu_s_median": round(statistics.median(r[name][1] for r in rows), 3)} for name in rows[0]}  # fmt: skip
    table["heavy_modules_loaded"] = json.loads(samples[0]["out"].splitlines()[1])["heavy_modules"]
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--file", default="examples/scans/cone.npy")
    args = p.parse_args()
    cmds = commands(args.file)
    # Bytecode for clip2point's own modules, as an installed package has (PYTHONDONTWRITEBYTECODE=1
    # or an edited checkout would otherwise compile them in every timed process).
    for folder in ("c2p_cli", "kernels", "training", "export"):
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / folder)], check=True)
    run(cmds["classify"])  # text features into the cache: every timed round is a user's second run
    samples: dict[str, list[dict]] = {name: [] for name in cmds}
    load_before = os.getloadavg()
    for round_ in range(args.rounds):
        for name, cmd in cmds.items():
            samples[name].append(run(cmd))
        print(f"round {round_ + 1}/{args.rounds}: " + ", ".join(f"{n} {s[-1]['wall']:.2f}s" for n, s in samples.items()),
              file=sys.stderr, flush=True)  # fmt: skip
    import platform

    from clip2point.models.precision import cpu_bf16, cpu_flags

    result = {name: summarise(s) for name, s in samples.items() if name != "phases"}
    result["phases"] = phase_table(samples["phases"])
    torch_s, classify_s = result["import_torch"], result["classify"]
    result.update({
        "benchmark": "cold_start",
        "classify_over_import_torch": round(classify_s["wall_s_median"] / torch_s["wall_s_median"], 2),
        "classify_over_import_torch_cpu": round(classify_s["cpu_s_median"] / torch_s["cpu_s_median"], 2),
        "rounds": args.rounds,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "cpu_bf16": cpu_bf16(),
                    "cpu_flags": " ".join(sorted(cpu_flags())), "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    })  # fmt: skip
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
