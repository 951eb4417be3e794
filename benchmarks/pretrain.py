"""Pre-training throughput (samples/s) with and without the image-feature cache, in one run.

A fixed synthetic workload: procedural meshes rendered once into a pairs set (`c2p synth --pairs`
equivalent), then `clip2point.training.pretrain.pretrain` runs twice on it with identical settings: with
the cache (the frozen image encoder ran once, before training; training only renders depth maps
and runs the trainable depth encoder) and without it (every step reads the PNG renders and runs
the frozen image encoder too). samples/s is the median over optimiser steps after the first
(warm-up) step, from the runs' metrics.jsonl; the one-off cost of building the cache is reported
separately. CPU default: the tiny c2p-tiny model; on CUDA default: ViT-B-32 (random weights), the
Triton depth renderer and bf16 autocast. Prints one JSON object. Example:
    python benchmarks/pretrain.py                       # CPU, c2p-tiny
    python benchmarks/pretrain.py --device cuda --models 256 --batch-size 128
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path


def _run(pairs: Path, out: Path, args, cache: bool, feature_dir: Path) -> dict:
    from clip2point.training.pretrain import PretrainConfig, pretrain

    cfg = PretrainConfig(
        data=str(pairs), out=str(out), model=args.model, pretrained=args.pretrained, epochs=args.epochs,
        batch_size=args.batch_size, optimizer="adamw", lr=1e-5, n_points=args.points, device=args.device,
        workers=args.workers, cache_image_features=cache, feature_cache_dir=str(feature_dir), bf16=True,
        render_backend=args.render_backend, seed=0,
    )
    start = time.perf_counter()
    result = pretrain(cfg)
    total = time.perf_counter() - start
    steps = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [s["samples_per_s"] for s in steps if s["kind"] == "step"][1:]
    config = json.loads((out / "config.json").read_text())
    return {
        "steps": result.steps,
        "samples_per_s": round(statistics.median(rates), 2) if rates else None,
        "wall_s": round(total, 2),
        "cache_build_s": config["image_feature_cache"].get("seconds") if cache else None,
    }


def run(args) -> dict:
    import torch

    from clip2point.distributed import resolve_device
    from clip2point.training.pairs import synth_sources, write_pairs

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    args.device = str(device)
    args.model = args.model or ("ViT-B-32" if cuda else "c2p-tiny")
    args.render_backend = args.render_backend or ("triton" if cuda else "torch")
    if args.workers is None:
        args.workers = 4 if cuda else 0
    if not cuda and args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pairs, render_s = Path(args.pairs) if args.pairs else tmp / "pairs", None
        if not args.pairs:
            from clip2point.synth import SHAPES

            per_class = -(-args.models // len(SHAPES))
            sources = synth_sources(list(SHAPES), per_class, seed=0)[: args.models]
            t0 = time.perf_counter()
            write_pairs(sources, pairs, n_points=2048, seed=0)
            render_s = round(time.perf_counter() - t0, 2)
        from clip2point.training.pairs import open_pairs

        args.models = len(open_pairs(pairs))
        # A discarded one-epoch run first, so that one-time costs (imports, allocator, kernel
        # compilation) do not land in whichever mode is timed first.
        _run(pairs, tmp / "warmup", argparse.Namespace(**{**vars(args), "epochs": 1}), False, tmp / "warmup_features")
        cached = _run(pairs, tmp / "cached", args, True, tmp / "features")
        uncached = _run(pairs, tmp / "uncached", args, False, tmp / "features")
    ratio = (cached["samples_per_s"] / uncached["samples_per_s"]
             if cached["samples_per_s"] and uncached["samples_per_s"] else None)
    return {
        "benchmark": "pretrain",
        "workload": {
            "models": args.models, "views_per_model": 10, "batch_size": args.batch_size, "epochs": args.epochs,
            "points": args.points, "model": args.model, "pretrained": args.pretrained,
        },
        "device": torch.cuda.get_device_name(device) if cuda else f"cpu ({torch.get_num_threads()} threads)",
        "render_backend": args.render_backend,
        "bf16": cuda,
        "pairs_render_s": render_s,
        "with_cache": cached,
        "without_cache": uncached,
        "cache_speedup": round(ratio, 3) if ratio else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", default=None, help="default: ViT-B-32 on CUDA, c2p-tiny on CPU")
    parser.add_argument("--pretrained", default="none")
    parser.add_argument("--models", type=int, default=32, help="meshes in the pairs set")
    parser.add_argument("--pairs", default=None, help="use this pairs set (e.g. made by `c2p synth --pairs`) instead of rendering one")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--points", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: 4 on CUDA, 0 on CPU)")
    parser.add_argument("--render-backend", default=None, help="default: triton on CUDA, torch on CPU")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (CPU runs)")
    args = parser.parse_args()
    print(json.dumps(run(args), indent=2))


if __name__ == "__main__":
    main()
