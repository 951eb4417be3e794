"""Throughput of `c2p classify`: the batched, prefetching pipeline against a one-file-at-a-time loop.

Each mode runs in its own subprocess on the same synthetic files, so its peak RSS is its own.
Prints one JSON object. Example:
    python benchmarks/classify.py --files 200 --model ViT-B-32 --pretrained none
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _worker(args) -> None:
    """Classify the files in one mode and print a JSON line with timing and peak RSS."""
    import torch

    from clip2point.classifier import load_classifier

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
    from clip2point.pipeline import ReadOptions, classify_files, classify_files_sequential

    files = sorted(Path(args.data).rglob("*.ply"))[: args.files]
    clf = load_classifier(labels=args.labels, model=args.model, pretrained=args.pretrained, views=args.views, device=args.device)
    read = ReadOptions(n_points=args.points)
    # warm-up outside the timed region (first-call allocations, thread pools)
    list(classify_files_sequential(clf, files[:2], read=read))
    start = time.perf_counter()
    if args.mode == "pipeline":
        results = list(classify_files(clf, files, read=read, batch_size=args.batch_size, workers=args.workers))
    else:
        results = list(classify_files_sequential(clf, files, read=read))
    sync()
    elapsed = time.perf_counter() - start
    ok = sum(r.ok for r in results)
    print(json.dumps({
        "mode": args.mode,
        "files": len(files),
        "classified": ok,
        "seconds": round(elapsed, 3),
        "clouds_per_s": round(len(files) / elapsed, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_rss_workers_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "torch_threads": torch.get_num_threads(),
    }))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--files", type=int, default=200)
    p.add_argument("--model", default="ViT-B-32")
    p.add_argument("--pretrained", default="none")
    p.add_argument("--views", type=int, default=6)
    p.add_argument("--points", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--labels", default="cube,sphere,cylinder,cone,torus,pyramid,capsule,ring")
    p.add_argument("--mode", choices=["pipeline", "sequential"], help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.mode:
        _worker(args)
        return

    from clip2point.synth import SHAPES, write_dataset

    with tempfile.TemporaryDirectory() as tmp:
        classes = list(SHAPES[:8])
        per_class = -(-args.files // len(classes))
        write_dataset(tmp, classes=classes, per_class=per_class, test_per_class=0, fmt="ply", n_points=2048, seed=0)
        runs = {}
        for mode in ("pipeline", "sequential"):
            cmd = [sys.executable, __file__, "--mode", mode, "--data", tmp] + [
                f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("mode", "data")
            ]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            runs[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    import platform

    import torch

    print(json.dumps({
        "benchmark": "classify",
        "model": args.model,
        "pretrained": args.pretrained,
        "views": args.views,
        "points": args.points,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "device": args.device,
        "device_name": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else platform.processor() or "cpu",
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "pipeline": runs["pipeline"],
        "sequential": runs["sequential"],
        "speedup": round(runs["pipeline"]["clouds_per_s"] / runs["sequential"]["clouds_per_s"], 2),
    }, indent=2))


if __name__ == "__main__":
    main()
