"""Depth-rendering throughput: the Triton kernel against the torch reference on the same device.

Prints one JSON object. Clouds are random surface-like samples (points on the unit sphere with
a little radial noise), rendered at the paper's settings (radius 0.02, distance 1). On CPU only
the reference runs ("triton": null says why) and the default batch is reduced (stated in the
output). On CUDA both run and the output also says whether they agree (mask mismatches, max
absolute difference).

    PYTHONPATH=. python3 benchmarks/projection.py --device cuda --out-dtype float16
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable without installing the project

import torch  # noqa: E402

from clip2point.kernels import render_depth  # noqa: E402
from clip2point.kernels._backend import interpreter_enabled, triton_import_error  # noqa: E402
from clip2point.views import camera_bases  # noqa: E402

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
CPU_DEFAULT_BATCH = 16


def _clouds(batch: int, n: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    p = torch.randn(batch, n, 3, generator=g)
    p = p / p.norm(dim=-1, keepdim=True) * (1 + 0.02 * torch.randn(batch, n, 1, generator=g))
    p = p / p.norm(dim=-1, keepdim=True).amax(dim=1, keepdim=True)
    return p.to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device, warmup: int, repeats: int) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--batch", type=int, default=None, help=f"clouds per call (256; {CPU_DEFAULT_BATCH} on CPU)"
    )
    parser.add_argument("--points", type=int, default=1024)
    parser.add_argument("--views", type=int, default=10, choices=(6, 10))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--channels", type=int, default=1, choices=(1, 3))
    parser.add_argument("--out-dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    args = parser.parse_args(argv)

    device_name = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device_name)
    notes = []
    batch = args.batch
    if batch is None:
        batch = 256 if device.type == "cuda" else CPU_DEFAULT_BATCH
        if device.type != "cuda":
            notes.append(f"CPU: batch reduced to {batch} (pass --batch to change)")
    out_dtype = DTYPES[args.out_dtype]
    points = _clouds(batch, args.points, device)
    bases = camera_bases(args.views, device=device)
    kw = dict(image_size=args.size, channels=args.channels, out_dtype=out_dtype)
    bytes_per_cloud = args.views * args.size * args.size * args.channels * torch.finfo(out_dtype).bits // 8

    def measure(backend: str) -> dict:
        seconds = _time(
            lambda: render_depth(points, bases, backend=backend, **kw), device, args.warmup, args.repeats
        )
        clouds_per_s = batch / seconds
        return {
            "ms_per_batch": round(seconds * 1e3, 3),
            "clouds_per_s": round(clouds_per_s, 1),
            "output_GB_per_s": round(bytes_per_cloud * clouds_per_s / 1e9, 3),
        }

    result: dict = {
        "benchmark": "projection",
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "versions": {"torch": torch.__version__, "triton": None, "python": platform.python_version()},
        "batch": batch,
        "points": args.points,
        "views": args.views,
        "image_size": args.size,
        "channels": args.channels,
        "out_dtype": args.out_dtype,
        "bytes_written_per_cloud": bytes_per_cloud,
        "repeats": args.repeats,
        "reference": measure("torch"),
        "triton": None,
        "speedup_triton_over_reference": None,
    }
    if device.type == "cpu":
        result["threads"] = torch.get_num_threads()
    error = triton_import_error()
    if error is not None:
        result["triton_unavailable"] = f"triton does not import: {error}"
    elif device.type != "cuda":
        why = "the Triton kernel needs CUDA tensors"
        if interpreter_enabled():
            why += " (TRITON_INTERPRET=1 would run it in the interpreter, which measures nothing useful)"
        result["triton_unavailable"] = why
    else:
        import triton

        result["versions"]["triton"] = triton.__version__
        result["triton"] = measure("triton")
        result["speedup_triton_over_reference"] = round(
            result["reference"]["ms_per_batch"] / result["triton"]["ms_per_batch"], 2
        )
        got = render_depth(points, bases, backend="triton", **kw).float()
        want = render_depth(points, bases, backend="torch", **kw).float()
        background = want.amax(dim=(0, 1, 3, 4), keepdim=True)  # per channel, background is the largest value
        result["agreement"] = {
            "mask_mismatches": int(((got == background) != (want == background)).sum()),
            "max_abs_diff": float((got - want).abs().max()),
            "bitwise_equal": bool(torch.equal(got, want)),
        }
    if notes:
        result["notes"] = notes
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
