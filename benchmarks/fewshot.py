"""Wall time of few-shot adapter training with the feature cache against recomputing features every
epoch, and the cost of per-epoch resampling (`--resamples R`) against R=1.

The runs train the same adapter (16 shots x 10 synthetic classes, 20 epochs, `--select last` so
that every shot trains) in the same process, on the same device:
- cached: both paths' per-view features are rendered and encoded once (a cold, empty cache),
  then each epoch only runs the adapter;
- recompute: the shots are rendered and encoded again before every epoch, as the reference
  CLIP2Point few-shot code does;
- resampled: R point sets per shot are rendered and encoded once (cold cache), and each epoch
  every shot draws one of them (the official loader's fresh samples, cached).
The encoders are frozen and rendering is deterministic, so cached and recompute must end with
identical adapter weights (`same_weights`). Prints one JSON object. Examples:
    python benchmarks/fewshot.py                                   # c2p-tiny, CPU
    python benchmarks/fewshot.py --model ViT-B-32 --epochs 5      # ViT-B-32 random weights (slow on CPU)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def _run(root: Path, out: Path, args, recompute: bool, cache: Path, resamples: int = 1) -> dict:
    from clip2point.training.fewshot import FewShotOptions, run_fewshot

    opts = FewShotOptions(
        shots=args.shots, epochs=args.epochs, model=args.model, pretrained="none", n_points=args.points,
        device=args.device, select="last", eval_test=False, cache_dir=str(cache), use_cache=not recompute,
        recompute_features_every_epoch=recompute, seed=0, resamples=resamples,
    )
    start = time.perf_counter()
    summary = run_fewshot(root, out, opts)
    wall = time.perf_counter() - start
    return {"wall_s": round(wall, 3), "feature_s": summary["feature_time_s"], "train_samples": summary["train_samples"],
            "final_train_acc": summary["last"]["train_acc"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="c2p-tiny", help="open_clip model, random weights (default c2p-tiny).")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--points", type=int, default=1024)
    parser.add_argument("--resamples", type=int, default=4, help="R of the resampled run (compared with R=1).")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default).")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from clip2point.store.checkpoints import load_tensors
    from clip2point.synth import SHAPES, write_dataset

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = tmp / "data"
        write_dataset(root, classes=list(SHAPES[: args.classes]), per_class=args.shots, test_per_class=0, fmt="off")
        cached = _run(root, tmp / "cached", args, recompute=False, cache=tmp / "cache")
        recompute = _run(root, tmp / "recompute", args, recompute=True, cache=tmp / "cache")
        resampled = _run(root, tmp / "resampled", args, recompute=False, cache=tmp / "cache-r", resamples=args.resamples)
        a, b = load_tensors(tmp / "cached" / "last.safetensors"), load_tensors(tmp / "recompute" / "last.safetensors")
        same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    print(json.dumps({
        "benchmark": "fewshot feature cache",
        "model": f"{args.model} (random weights)",
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "classes": args.classes, "shots": args.shots, "epochs": args.epochs, "points": args.points, "views": 10,
        "cached": cached,
        "recompute_every_epoch": recompute,
        "speedup": round(recompute["wall_s"] / cached["wall_s"], 2),
        f"resamples_{args.resamples}": resampled,
        "resampling_cost": {
            "feature_time_ratio_vs_r1": round(resampled["feature_s"] / cached["feature_s"], 2),
            "wall_ratio_vs_r1": round(resampled["wall_s"] / cached["wall_s"], 2),
        },
        "same_weights": same,
    }, indent=2))


if __name__ == "__main__":
    main()
