"""Throughput of `c2p classify` with the torch, ONNX Runtime (float32 and int8) and (where
present) TensorRT backends.

The same synthetic files are classified by every backend, with and without the folded first
convolution, in one run: the torch classifier (also in bf16, `torch_bf16`, where the CPU has
bfloat16 instructions or on CUDA: clip2point.models.precision), then its export (classifier.onnx, checked against
torch as `c2p export` does) run by ONNX Runtime, the int8 graph of `c2p export --quantize int8`
(dynamic quantisation of the MatMul/Gemm weights) run by ONNX Runtime, then a TensorRT FP16
engine when TensorRT and a CUDA GPU are present. Reading is identical for all (same files, same
workers), so the ratios compare the model paths. Every backend is compared with torch (label
agreement, largest difference in any class probability); int8 is also compared with float32
ONNX Runtime (`onnx_int8.vs_onnx_float32`: speed ratio, top-1 agreement, largest probability
difference) and with bf16 torch (`onnx_int8.vs_torch_bf16`). Random weights (--pretrained none) give near-uniform probabilities, so agreement
measured on them says little about int8 on real CLIP weights. Prints one JSON object. Example:
    python benchmarks/backends.py --files 64 --model ViT-B-32 --pretrained none
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path


def _classify(clf, files, args, warm_up: bool = False):
    """(results, seconds) of one timed classification of `files` (after a warm-up batch if asked)."""
    from clip2point.engine.pipeline import classify_files
    from clip2point.run_spec import describe_run

    # every class's probability (top_k), for the largest difference
    spec = describe_run(n_points=args.points, batch_size=args.batch_size, top_k=len(clf.labels), workers=args.workers,
                        needs_labels=False)  # fmt: skip
    if warm_up:
        list(classify_files(clf, files[: args.batch_size], replace(spec, workers=0)))
    start = time.perf_counter()
    results = list(classify_files(clf, files, spec))
    return results, time.perf_counter() - start


def _agreement(ref, got) -> dict:
    """Top-1 agreement, and the largest difference in the top probability and in any class's probability."""
    same = sum(a.label == b.label for a, b in zip(ref, got, strict=True))
    pairs = [(a, b) for a, b in zip(ref, got, strict=True) if a.ok and b.ok]
    top = max((abs(a.probability - b.probability) for a, b in pairs), default=0.0)
    every = max((abs(p - dict(b.top_k)[lab]) for a, b in pairs for lab, p in a.top_k), default=0.0)
    return {"label_agreement": round(same / max(1, len(ref)), 4), "max_top_probability_diff": float(f"{top:.3g}"),
            "max_probability_diff": float(f"{every:.3g}")}  # fmt: skip


def _trt_status() -> str | None:
    """None when TensorRT and a CUDA GPU are usable, else why not."""
    from clip2point.errors import BackendUnavailableError
    from clip2point.export.tensorrt import import_tensorrt, require_cuda

    try:
        import_tensorrt()
        require_cuda()
    except BackendUnavailableError as e:
        return str(e)
    return None


def run(args) -> dict:
    import torch

    from clip2point.distributed import resolve_device
    from clip2point.export.onnx import ExportOptions, export_classifier
    from clip2point.export.runtime import load_exported_classifier
    from clip2point.models.classifier import load_classifier
    from clip2point.models.precision import apply_precision, cpu_bf16, cpu_flags, native_bf16_cpu
    from clip2point.synth import SHAPES, write_dataset

    device = resolve_device(args.device)
    # bf16 torch beside the int8 graph where this machine runs it fast (a CPU with bf16 instructions, or CUDA)
    bf16 = "bf16" if device.type == "cuda" or native_bf16_cpu() else None
    trt_missing = _trt_status() if device.type == "cuda" else "TensorRT needs a CUDA device (running on cpu)"
    report: dict = {
        "benchmark": "backends",
        "model": args.model,
        "pretrained": args.pretrained,
        "views": args.views,
        "points": args.points,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "repeats": args.repeats,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "tensorrt": "not run: " + trt_missing if trt_missing else "run",
        "cpu_bf16": cpu_bf16(),
        "cpu_flags": " ".join(sorted(cpu_flags())),
        "runs": {},
    }
    import onnxruntime

    report["onnxruntime"] = onnxruntime.__version__
    with tempfile.TemporaryDirectory() as tmp:
        classes = list(SHAPES[:8])
        per_class = -(-args.files // len(classes))
        write_dataset(Path(tmp) / "data", classes=classes, per_class=per_class, test_per_class=0, fmt="ply", n_points=2048, seed=0)
        files = sorted((Path(tmp) / "data").rglob("*.ply"))[: args.files]
        # Build every classifier first, then time them in interleaved rounds (the fastest round
        # counts), so that a slow spell of a shared machine does not fall on one configuration only.
        classifiers: dict[tuple[str, str], object] = {}
        for fold in (True, False):
            key = "folded" if fold else "unfolded"
            entry = report["runs"].setdefault(key, {})
            clf = load_classifier(labels=args.labels, model=args.model, pretrained=args.pretrained, views=args.views,
                                  device=str(device), fold=fold)  # fmt: skip
            out = Path(tmp) / f"export-{key}"
            started = time.perf_counter()
            meta = export_classifier(clf, out, ExportOptions(quantize="int8"))
            entry["export_seconds"] = round(time.perf_counter() - started, 1)
            entry["export_check_max_abs_diff"] = meta["check"]["classifier"]["max_abs_diff"]
            entry["int8_check"] = {k: meta["check"]["classifier_int8"][k] for k in ("max_abs_diff", "max_prob_diff", "argmax_agreement")}
            entry["int8_quantization"] = meta["graphs"]["classifier_int8"]["quantization"]
            entry["onnx_bytes"] = {"float32": meta["graphs"]["classifier"]["bytes"], "int8": meta["graphs"]["classifier_int8"]["bytes"]}
            classifiers[key, "torch"] = clf
            if bf16 is not None:  # the same weights, encoders cast to bfloat16 (clip2point.models.precision)
                classifiers[key, "torch_bf16"] = load_classifier(labels=args.labels, model=args.model, pretrained=args.pretrained,
                                                                 views=args.views, device=str(device), fold=fold)  # fmt: skip
                apply_precision(classifiers[key, "torch_bf16"], bf16)
            classifiers[key, "onnx"] = load_exported_classifier(out, backend="onnx", device=str(device), precision="float32")
            classifiers[key, "onnx_int8"] = load_exported_classifier(out, backend="onnx", device=str(device), precision="int8")
            if not trt_missing:
                from clip2point.export.tensorrt import build_and_check

                started = time.perf_counter()
                trt_meta = build_and_check(out, max_batch=max(args.batch_size, 1))
                entry["trt_build_seconds"] = round(time.perf_counter() - started, 1)
                entry["trt_check_max_abs_diff"] = trt_meta["tensorrt"]["check"]["max_abs_diff"]
                classifiers[key, "trt"] = load_exported_classifier(out, backend="trt", device=str(device))
        results, best = {}, {}
        for round_ in range(args.repeats):
            for name, clf in classifiers.items():
                results[name], seconds = _classify(clf, files, args, warm_up=round_ == 0)
                best[name] = min(best.get(name, float("inf")), seconds)
        for (key, backend), seconds in best.items():
            report["runs"][key][backend] = {
                "files": len(files),
                "classified": sum(r.ok for r in results[key, backend]),
                "seconds": round(seconds, 3),
                "clouds_per_s": round(len(files) / seconds, 3),
            }
        for (key, backend), got in results.items():
            if backend != "torch":
                run_info = report["runs"][key][backend]
                run_info.update(_agreement(results[key, "torch"], got))
                run_info["speedup_vs_torch"] = round(run_info["clouds_per_s"] / report["runs"][key]["torch"]["clouds_per_s"], 2)
                if backend.startswith("onnx"):
                    run_info["providers"] = classifiers[key, backend].meta["providers"]
                if backend == "onnx_int8":
                    run_info["vs_onnx_float32"] = {
                        "speedup": round(run_info["clouds_per_s"] / report["runs"][key]["onnx"]["clouds_per_s"], 2),
                        **_agreement(results[key, "onnx"], got),
                    }
                    if (key, "torch_bf16") in results:
                        run_info["vs_torch_bf16"] = {
                            "speedup": round(run_info["clouds_per_s"] / report["runs"][key]["torch_bf16"]["clouds_per_s"], 2),
                            **_agreement(results[key, "torch_bf16"], got),
                        }
    folded, unfolded = report["runs"]["folded"], report["runs"]["unfolded"]
    report["folded_vs_unfolded"] = {
        backend: round(folded[backend]["clouds_per_s"] / unfolded[backend]["clouds_per_s"], 2)
        for backend in ("torch", "torch_bf16", "onnx", "onnx_int8", "trt") if backend in folded and backend in unfolded
    }  # fmt: skip
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=64)
    p.add_argument("--model", default="ViT-B-32")
    p.add_argument("--pretrained", default="none")
    p.add_argument("--views", type=int, default=6)
    p.add_argument("--points", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=0, help="Reader processes (0: read in-process, the same for every backend).")
    p.add_argument("--device", default="auto")
    p.add_argument("--repeats", type=int, default=2, help="Timed runs per configuration; the fastest counts.")
    p.add_argument("--labels", default="cube,sphere,cylinder,cone,torus,pyramid,capsule,ring")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(json.dumps(run(args), indent=2))


if __name__ == "__main__":
    main()
