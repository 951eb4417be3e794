"""Depth-rendering throughput: the torch reference against its frozen v1 and the Triton kernel, same device.

Prints one JSON object. Clouds are random surface-like samples (points on the unit sphere with
a little radial noise), rendered at the paper's settings (radius 0.02, distance 1).

- "reference" (render_depth(backend="torch"): the compact strategy on CPU, the dense one on
  other devices) is timed against "reference_v1", the renderer as it was before the compact
  strategy (benchmarks/_reference_v1.py, frozen), in the same run: the two alternate call by call,
  so that load on a shared machine falls on both, and `speedup_reference_over_v1` is the median
  of the per-pair ratios. `bitwise_equal_to_v1` compares their maps.
- On CUDA the Triton kernel is timed too, and the output says whether it agrees with the
  reference (mask mismatches, max absolute difference) and where its time goes
  ("triton_stages": z-buffer fill, splat, normalisation). On CPU "triton": null says why.

    PYTHONPATH=. python3 benchmarks/projection.py                      # CPU: B=32, V=10, 224 px
    PYTHONPATH=. python3 benchmarks/projection.py --threads 1
    PYTHONPATH=. python3 benchmarks/projection.py --device cuda --out-dtype float16
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable without installing the project

import torch  # noqa: E402

from clip2point.kernels import render_depth  # noqa: E402
from clip2point.kernels._backend import interpreter_enabled, triton_import_error  # noqa: E402
from clip2point.kernels.inputs import check_inputs  # noqa: E402
from clip2point.views import camera_bases  # noqa: E402

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
CPU_DEFAULT_BATCH = 32


def load_reference_v1():
    """benchmarks/_reference_v1.py by path (benchmarks/ is not a package)."""
    path = Path(__file__).resolve().with_name("_reference_v1.py")
    spec = importlib.util.spec_from_file_location("c2p_benchmarks_reference_v1", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def _time_pair(
    fn_a, fn_b, device: torch.device, warmup: int, repeats: int
) -> tuple[list[float], list[float]]:
    """Seconds per call of two functions, alternating (and alternating which goes first)."""
    for _ in range(warmup):
        fn_a()
        fn_b()
    times_a, times_b = [], []
    for i in range(repeats):
        order = ((fn_a, times_a), (fn_b, times_b)) if i % 2 == 0 else ((fn_b, times_b), (fn_a, times_a))
        for fn, times in order:
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - start)
    return times_a, times_b


def _median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def triton_stages(inputs, device: torch.device, warmup: int, repeats: int) -> dict:
    """Where the Triton renderer's time goes (medians, ms; the stages are differences of separate timings).

    zbuffer_fill: torch.full of the +inf z-buffer; splat: `splat_zbuffer` minus the fill;
    normalise: the whole renderer minus `splat_zbuffer`. The GB/s count the bulk bytes each stage
    must move: the fill writes the z-buffer once, the normalisation reads it twice (min / max,
    then values) and writes the maps.
    """
    from clip2point.kernels.triton_depth import render_depth_triton, splat_zbuffer

    cells = inputs.batch * inputs.num_views * inputs.image_size**2
    out_bytes = cells * inputs.channels * torch.finfo(inputs.out_dtype).bits // 8
    fill = _time(
        lambda: torch.full((cells,), float("inf"), dtype=torch.float32, device=device),
        device,
        warmup,
        repeats,
    )
    splat = _time(lambda: splat_zbuffer(inputs), device, warmup, repeats)
    whole = _time(lambda: render_depth_triton(inputs), device, warmup, repeats)
    normalise = max(whole - splat, 1e-9)
    return {
        "zbuffer_fill_ms": round(fill * 1e3, 3),
        "splat_ms": round((splat - fill) * 1e3, 3),
        "normalise_ms": round((whole - splat) * 1e3, 3),
        "whole_ms": round(whole * 1e3, 3),
        "zbuffer_fill_GB_per_s": round(cells * 4 / max(fill, 1e-9) / 1e9, 1),
        "normalise_GB_per_s": round((2 * cells * 4 + out_bytes) / normalise / 1e9, 1),
    }


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
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

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

    def figures(seconds: float) -> dict:
        clouds_per_s = batch / seconds
        return {
            "ms_per_batch": round(seconds * 1e3, 3),
            "clouds_per_s": round(clouds_per_s, 1),
            "output_GB_per_s": round(bytes_per_cloud * clouds_per_s / 1e9, 3),
        }

    def measure(backend: str) -> dict:
        fn = lambda: render_depth(points, bases, backend=backend, **kw)  # noqa: E731
        return figures(_time(fn, device, args.warmup, args.repeats))

    v1 = load_reference_v1()
    inputs = check_inputs(points, bases, **kw)
    times_ref, times_v1 = _time_pair(
        lambda: render_depth(points, bases, backend="torch", **kw),
        lambda: v1.render_depth_v1(inputs),
        device,
        args.warmup,
        args.repeats,
    )
    same_as_v1 = torch.equal(render_depth(points, bases, backend="torch", **kw), v1.render_depth_v1(inputs))

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
        "reference": figures(_median(times_ref)),
        "reference_v1": figures(_median(times_v1)),
        "speedup_reference_over_v1": round(
            _median([b / a for a, b in zip(times_ref, times_v1, strict=True)]), 2
        ),
        "bitwise_equal_to_v1": same_as_v1,
        "triton": None,
        "speedup_triton_over_reference": None,
    }
    if device.type == "cpu":
        result["threads"] = torch.get_num_threads()
        result["cpu_count"] = os.cpu_count()
        result["load_average_1min"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
        # OpenMP threads that spin while waiting steal the CPU from working ones on an oversubscribed
        # machine (many more runnable threads than cores): record the settings that change this.
        result["omp_env"] = {
            k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY") if k in os.environ
        }
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
        result["triton_stages"] = triton_stages(inputs, device, args.warmup, args.repeats)
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
