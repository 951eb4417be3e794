"""Throughput of `c2p classify` against its honest bound: the encoder alone, in the same run; and
a lower encoder precision against float32, in the same run.

Files are written to disk in a mix of formats (binary PLY, NPY, NPZ, ASCII XYZ, ASCII PCD, OFF,
OBJ and binary STL meshes), then each mode runs in its own subprocess, so its peak RSS is its own:

- `encoder_only`: depth maps already in memory (one batch rendered up front), the same model,
  batch size and precision; only the encoder and the classifier head run, ceil(N / batch) times.
- `render_encoder`: clouds already in memory; rendering + encoder (what the model side costs).
- `pipeline`: `clip2point.engine.pipeline.classify_files` from disk, with reader processes: what
  `c2p classify` does. `pipeline / encoder_only` is the figure of merit (1.0 = reading,
  sampling, rendering and batching cost nothing).
- `sequential` (with --sequential): one file at a time, no reader processes.

`--precision bf16` (or fp16 / auto) also runs float32: encoder_only and pipeline in both
precisions, alternating (fp32, bf16, fp32, bf16, ... over --repeat rounds, each keeping its fastest),
and adds `<p>_over_fp32` (pipeline clouds/s, <p> / fp32), `<p>_over_fp32_encoder_only` and
`<p>_label_agreement` (share of files given float32's label). The precision is applied once to the
classifier (clip2point.models.precision: CPU bf16 casts the encoders' weights and inputs; the
projection stays float32). `machine` says what it ran on: CPU model, its bf16 flags, load averages
before and after (on a shared machine compare ratios, not rates).

Prints one JSON object. Examples:
    python benchmarks/classify.py                                   # 2000 files, ViT-B-32, CPU
    python benchmarks/classify.py --files 256                       # a quick look
    python benchmarks/classify.py --precision bf16 --files 128 --repeat 2             # bf16 vs fp32, CPU
    python benchmarks/classify.py --precision bf16 --model c2p-demo --pretrained c2p-demo --files 512
    python benchmarks/classify.py --device cuda --precision fp16    # 20000 files, fp16 vs fp32
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FORMATS = ("ply", "npy", "npz", "xyz", "pcd", "off", "obj", "stl")
CLASSES = ("cube", "sphere", "cylinder", "cone", "torus", "pyramid", "capsule", "ring")


# ---------------------------------------------------------------------------------------------
# Data: distinct shapes written in every format, round-robin
# ---------------------------------------------------------------------------------------------


def _write(path: Path, fmt: str, cloud, mesh) -> None:
    import numpy as np

    from clip2point.io import write_off, write_ply

    if fmt == "ply":
        write_ply(path, cloud)
    elif fmt == "npy":
        np.save(path, cloud)
    elif fmt == "npz":
        np.savez(path, points=cloud)
    elif fmt == "xyz":
        np.savetxt(path, cloud, fmt="%.6f")
    elif fmt == "pcd":
        header = ("# .PCD v0.7\nVERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\n"
                  f"WIDTH {len(cloud)}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {len(cloud)}\nDATA ascii\n")
        with open(path, "w") as fh:
            fh.write(header)
            np.savetxt(fh, cloud, fmt="%.6f")
    elif fmt == "off":
        write_off(path, *mesh)
    elif fmt == "obj":
        v, f = mesh
        with open(path, "w") as fh:
            np.savetxt(fh, v, fmt="v %.6f %.6f %.6f")
            np.savetxt(fh, np.asarray(f) + 1, fmt="f %d %d %d")
    elif fmt == "stl":
        v, f = np.asarray(mesh[0], dtype=np.float32), np.asarray(mesh[1])
        tri = v[f]
        normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).astype(np.float32)
        rec = np.zeros(len(f), dtype=[("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")])
        rec["n"], rec["v"] = normals, tri
        with open(path, "wb") as fh:
            fh.write(b"c2p benchmark".ljust(80, b" ") + np.uint32(len(f)).tobytes() + rec.tobytes())


def write_files(folder: Path, n: int, n_points: int, distinct: int = 64) -> list[Path]:
    """n files, cycling through FORMATS; `distinct` shapes per format are written and then copied."""
    import shutil

    from clip2point.synth import random_cloud, random_mesh, sample_rng

    paths, originals = [], {}
    for i in range(n):
        fmt = FORMATS[i % len(FORMATS)]
        name = CLASSES[(i // len(FORMATS)) % len(CLASSES)]
        path = folder / f"{i:06d}_{name}.{fmt}"
        key = (fmt, (i // len(FORMATS)) % distinct)
        if key in originals:
            shutil.copyfile(originals[key], path)
        else:
            rng = sample_rng(FORMATS.index(fmt), "test", name, key[1])
            mesh = random_mesh(name, rng) if fmt in ("off", "obj", "stl") else None
            cloud = random_cloud(name, rng, n_points) if mesh is None else None
            _write(path, fmt, cloud, mesh)
            originals[key] = path
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------
# One mode, in its own process
# ---------------------------------------------------------------------------------------------


def _peak_rss_mb() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return round(own, 1), round(children, 1)


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the reader processes)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _worker(args) -> None:
    import torch

    from clip2point.engine.batching import read_one
    from clip2point.engine.pipeline import classify_files, classify_files_sequential
    from clip2point.models.classifier import load_classifier
    from clip2point.models.precision import apply_precision

    cuda = args.device.startswith("cuda")

    def sync():
        if cuda:
            torch.cuda.synchronize()

    files = sorted(Path(args.data).iterdir())[: args.files]
    clf = load_classifier(labels=",".join(CLASSES), model=args.model, pretrained=args.pretrained, views=args.views,
                          device=args.device)
    from clip2point.run_spec import describe_run

    apply_precision(clf, args.precision)  # once, as `c2p classify --precision` does
    spec = describe_run(n_points=args.points, batch_size=args.batch_size, workers=args.workers, precision=args.precision,
                        needs_labels=False)  # fmt: skip
    read = spec.read_options()
    batches = math.ceil(len(files) / args.batch_size)

    def encode(depth):
        with torch.inference_mode():
            return torch.softmax(clf.head(depth).float(), -1)

    clouds = [read_one(p, read)[0] for p in files[: args.batch_size]]
    list(classify_files_sequential(clf, files[:2], spec))  # warm-up: first-call allocations, thread pools
    record = {"mode": args.mode, "precision": clf.precision, "files": len(files)}
    if args.mode in ("encoder_only", "render_encoder"):
        with torch.inference_mode():
            depth = clf.render(clouds)
        encode(depth)
        sync()
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        for _ in range(batches):
            with torch.inference_mode():
                probs = encode(depth if args.mode == "encoder_only" else clf.render(clouds))
            probs.cpu()
        sync()
        record["batches"] = batches
        clouds_done = batches * args.batch_size
    else:
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        if args.mode == "pipeline":
            results = list(classify_files(clf, files, spec))
        else:
            results = list(classify_files_sequential(clf, files, spec))
        sync()
        record["classified"] = sum(r.ok for r in results)
        record["failed"] = [r.error for r in results if not r.ok][:3]
        record["labels"] = [r.label for r in results]
        clouds_done = len(files)
    elapsed = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu_start
    own, children = _peak_rss_mb()
    record.update({
        "seconds": round(elapsed, 3),
        # CPU seconds per cloud: the work itself, which other load on a shared machine does not change
        "cpu_ms_per_cloud": round(1000 * cpu / clouds_done, 1),
        "clouds_per_s": round(clouds_done / elapsed, 2),
        "peak_rss_mb": own,
        "peak_rss_children_mb": children,  # forked readers: counts the pages they share with this process
        "torch_threads": torch.get_num_threads(),
    })
    if cuda:
        record["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(json.dumps(record))


def machine(device: str) -> dict:
    """What the run ran on: CPU model and bf16 flags, cores, load averages, versions."""
    import torch

    from clip2point.models.precision import cpu_bf16, cpu_flags

    name = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                name = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    return {
        "cpu": name,
        "cpu_bf16": cpu_bf16(),
        "cpu_flags": " ".join(sorted(cpu_flags())),
        "cpus": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def _run_mode(args, data: Path, mode: str, precision: str) -> dict:
    flags = {k: v for k, v in vars(args).items()
             if k not in ("mode", "data", "sequential", "repeat", "precision") and v is not None}
    cmd = [sys.executable, __file__, "--mode", mode, "--data", str(data), f"--precision={precision}"] + [
        f"--{k.replace('_', '-')}={v}" for k, v in flags.items()
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if out.returncode != 0:
        raise SystemExit(f"{mode} ({precision}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_rounds(args, data: Path, precisions: list[str], modes: list[str]) -> dict[str, dict[str, dict]]:
    """{precision: {mode: fastest record}}. Modes and precisions alternate within each round: on a
    shared machine, load that comes and goes then hits every configuration alike."""
    runs: dict[str, dict[str, dict]] = {p: {} for p in precisions}
    for round_ in range(args.repeat):
        for mode in modes:
            for precision in precisions:
                record = _run_mode(args, data, mode, precision)
                record["round"] = round_
                shown = {k: v for k, v in record.items() if k != "labels"}
                print(json.dumps(shown), file=sys.stderr, flush=True)  # progress, and what a timeout would lose
                best = runs[precision].get(mode)
                record["rounds_s"] = (best["rounds_s"] if best else []) + [record["seconds"]]
                if best is None or record["clouds_per_s"] > best["clouds_per_s"]:
                    runs[precision][mode] = record
                else:
                    best["rounds_s"] = record["rounds_s"]
    return runs


def _ratios(runs: dict[str, dict]) -> dict:
    enc = runs["encoder_only"]["clouds_per_s"]
    out = {"pipeline_over_encoder_only": round(runs["pipeline"]["clouds_per_s"] / enc, 3),
           # the same ratio in CPU time (work, not waiting): on a shared machine the steadier of the two
           "pipeline_over_encoder_only_cpu": round(runs["encoder_only"]["cpu_ms_per_cloud"] / runs["pipeline"]["cpu_ms_per_cloud"], 3)}
    if "render_encoder" in runs:
        out["render_encoder_over_encoder_only"] = round(runs["render_encoder"]["clouds_per_s"] / enc, 3)
    if "sequential" in runs:
        out["pipeline_over_sequential"] = round(runs["pipeline"]["clouds_per_s"] / runs["sequential"]["clouds_per_s"], 3)
    return out


def compare(runs: dict[str, dict[str, dict]], low: str) -> dict:
    """`low` against fp32 in the same run: pipeline and encoder speed, labels kept."""
    fast, ref = runs[low], runs["fp32"]
    same = sum(a == b for a, b in zip(ref["pipeline"]["labels"], fast["pipeline"]["labels"], strict=True))
    return {
        f"{low}_over_fp32": round(fast["pipeline"]["clouds_per_s"] / ref["pipeline"]["clouds_per_s"], 3),
        f"{low}_over_fp32_encoder_only": round(fast["encoder_only"]["clouds_per_s"] / ref["encoder_only"]["clouds_per_s"], 3),
        f"{low}_over_fp32_cpu": round(ref["pipeline"]["cpu_ms_per_cloud"] / fast["pipeline"]["cpu_ms_per_cloud"], 3),
        f"{low}_label_agreement": round(same / max(1, len(ref["pipeline"]["labels"])), 4),
        f"{low}_pipeline_over_encoder_only": _ratios(fast)["pipeline_over_encoder_only"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=None, help="Files classified (default: 2000 on CPU, 20000 on CUDA).")
    p.add_argument("--model", default="ViT-B-32")
    p.add_argument("--pretrained", default="none")
    p.add_argument("--views", type=int, default=6)
    p.add_argument("--points", type=int, default=1024)
    p.add_argument("--file-points", type=int, default=2048, help="Points per point-cloud file on disk.")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=None, help="Reader processes (default: the pipeline's own default).")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16", "auto"],
                   help="Encoder precision; other than fp32, fp32 runs too and the two are compared.")
    p.add_argument("--sequential", action="store_true", help="Also time one file at a time.")
    p.add_argument("--repeat", type=int, default=1, help="Rounds of every mode, alternating; each reports its fastest.")
    p.add_argument("--data", help="Use (or fill, when empty) this folder instead of a temporary one.")
    p.add_argument("--mode", choices=["encoder_only", "render_encoder", "pipeline", "sequential"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.files is None:
        args.files = 20000 if args.device.startswith("cuda") else 2000
    if args.mode:
        _worker(args)
        return
    before = machine(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data or tmp)
        data.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        if len(list(data.iterdir())) < args.files:
            write_files(data, args.files, args.file_points)
        write_s = time.perf_counter() - start
        precisions = ["fp32"] if args.precision == "fp32" else ["fp32", args.precision]
        modes = ["encoder_only", "render_encoder", "pipeline"] if len(precisions) == 1 else ["encoder_only", "pipeline"]
        runs = run_rounds(args, data, precisions, modes + (["sequential"] if args.sequential else []))
    from clip2point.engine.pipeline import default_workers

    result = {
        "benchmark": "classify", "model": args.model, "pretrained": args.pretrained, "views": args.views,
        "points": args.points, "batch_size": args.batch_size, "files": args.files, "formats": list(FORMATS),
        "workers": args.workers if args.workers is not None else default_workers(args.files),
        "device": args.device, "precision": args.precision, "repeat": args.repeat, "write_files_s": round(write_s, 1),
        "machine": {**before, "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }  # fmt: skip
    if len(precisions) == 1:
        for record in runs["fp32"].values():
            record.pop("labels", None)
        result.update({**runs["fp32"], **_ratios(runs["fp32"])})
    else:
        low = args.precision
        summary = compare(runs, low)
        for by_mode in runs.values():
            for record in by_mode.values():
                record.pop("labels", None)
        result.update({"resolved_precision": runs[low]["pipeline"]["precision"], **summary,
                       "fp32": {**runs["fp32"], **_ratios(runs["fp32"])}, low: {**runs[low], **_ratios(runs[low])}})
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
