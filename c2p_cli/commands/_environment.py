"""What this machine offers clip2point: package versions, devices and the backends usable here.

Every probe is guarded: a package that is missing or broken is reported, never raised, so that
`c2p env` works on any install (offline, without triton, onnxruntime or TensorRT).
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import importlib.util
import os
import platform
import sys
from typing import Any

# Distributions whose versions are reported (None when not installed).
PACKAGES = (
    "torch", "torchvision", "open_clip_torch", "numpy", "triton", "onnx", "onnxscript", "onnxruntime",
    "onnxruntime-gpu", "tensorrt", "open3d", "trimesh", "laspy", "pye57", "fpsample", "safetensors", "h5py",
    "typer", "rich",
)  # fmt: skip
# Variables that change what clip2point does.
ENV_VARS = (
    "C2P_CACHE_DIR", "C2P_MODEL", "C2P_PRETRAINED", "C2P_DEPTH_ENCODER", "C2P_DEVICE", "C2P_BATCH_SIZE", "C2P_WORKERS",
    "C2P_LOG_LEVEL", "C2P_PROGRESS_INTERVAL", "C2P_RENDER_BACKEND", "C2P_DEBUG", "TRITON_INTERPRET", "HF_HUB_OFFLINE",
    "CUDA_VISIBLE_DEVICES",
)  # fmt: skip


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:200]


def package_versions() -> dict[str, str | None]:
    """Installed version of each of PACKAGES (read from the install metadata; nothing is imported)."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _spec(name: str):
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def _module(name: str):
    """(module, None) or (None, why not)."""
    try:
        found = importlib.util.find_spec(name.split(".")[0]) is not None
    except (ImportError, ValueError):  # a module entry that is None or has no spec
        found = False
    if not found:
        return None, "not installed"
    try:
        return importlib.import_module(name), None
    except Exception as e:  # a broken install raises anything
        return None, _first_line(e)


def _torch_build() -> dict[str, Any] | None:
    """torch's version and CUDA / ROCm build read from torch/version.py without importing torch, or None."""
    spec = _spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "version.py")
    try:
        version_spec = importlib.util.spec_from_file_location("_c2p_torch_version", path)
        module = importlib.util.module_from_spec(version_spec)
        version_spec.loader.exec_module(module)
        return {"version": module.__version__, "cuda_build": module.cuda, "hip_build": getattr(module, "hip", None)}
    except Exception:  # an unusual build: importing torch answers
        return None


def gpu_driver_visible() -> bool:
    """An NVIDIA (or, for ROCm builds, AMD) GPU driver is visible to this process (Linux device files)."""
    if not sys.platform.startswith("linux"):
        return True  # no cheap answer elsewhere: ask torch
    return any(os.path.exists(p) for p in ("/proc/driver/nvidia/version", "/dev/nvidia0", "/dev/dxg", "/dev/kfd"))


def torch_info() -> dict[str, Any]:
    """torch's version, build and devices. torch is imported only when it can say more than its files:
    when it is imported already, or a GPU build meets a visible GPU driver (without one, CUDA is not
    available and the 2-8 s import would only confirm it)."""
    build = _torch_build() if "torch" not in sys.modules else None
    if build is not None and not ((build["cuda_build"] or build["hip_build"]) and gpu_driver_visible()):
        gpu = build["cuda_build"] or build["hip_build"]
        return {"version": build["version"], "cuda_build": build["cuda_build"], "threads": None, "cuda_available": False,
                "devices": [], "cudnn": None, "imported": False,
                "note": "not imported: no GPU driver visible, so CUDA is not available" if gpu else "not imported: a CPU build"}  # fmt: skip
    torch, why = _module("torch")
    if torch is None:
        return {"error": why}
    info: dict[str, Any] = {"version": torch.__version__, "cuda_build": torch.version.cuda, "threads": torch.get_num_threads(),
                            "imported": True}  # fmt: skip
    try:
        info["cuda_available"] = bool(torch.cuda.is_available())
        info["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if info["cuda_available"] else []
        info["cudnn"] = torch.backends.cudnn.version() if info["cuda_available"] else None
    except Exception as e:  # a driver problem is worth reporting, not crashing on
        info["cuda_available"] = False
        info["cuda_error"] = _first_line(e)
    return info


def backends(cuda: bool) -> dict[str, str]:
    """Each backend c2p can use, with "yes ..." or "no: why"."""
    out: dict[str, str] = {"render torch": "yes"}
    triton, why = _module("triton")
    if triton is not None:
        _, why = _module("triton.language")
    interpret = os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")
    if why:
        out["render triton"] = f"no: triton {why}"
    elif cuda:
        out["render triton"] = f"yes (triton {getattr(triton, '__version__', '?')}, CUDA)"
    else:
        out["render triton"] = "CPU interpreter only (TRITON_INTERPRET=1), slow" if interpret else "no: needs a CUDA GPU"
    out["classify torch"] = "yes (cuda)" if cuda else "yes (cpu)"

    ort, why = _module("onnxruntime")
    if ort is None:
        out["classify onnx"] = f"no: onnxruntime {why} (pip install 'clip2point[onnx]')"
    else:
        try:
            providers = ort.get_available_providers()
        except Exception as e:
            providers, why = [], _first_line(e)
        out["classify onnx"] = f"yes ({', '.join(providers)})" if providers else f"no: {why}"
    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if _spec(m) is None]
    out["export onnx"] = "yes" if not missing else f"no: {', '.join(missing)} not installed (pip install 'clip2point[onnx]')"
    if missing:
        out["export int8"] = out["export onnx"]
    else:
        quant, why = _module("onnxruntime.quantization")
        out["export int8"] = "yes (onnxruntime.quantization)" if quant is not None else f"no: onnxruntime.quantization {why}"

    trt, why = _module("tensorrt")
    if trt is None:
        out["tensorrt"] = f"no: tensorrt {why}"
    else:
        version = str(getattr(trt, "__version__", "?"))
        major = version.split(".")[0]
        if not major.isdigit() or int(major) < 10:
            out["tensorrt"] = f"no: TensorRT {version} is older than 10"
        else:
            out["tensorrt"] = f"yes (TensorRT {version})" if cuda else f"no: TensorRT {version} needs a CUDA GPU"
    o3d = _spec("open3d")
    out["glTF/GLB meshes, make-pairs"] = "yes (open3d)" if o3d is not None else "no: open3d not installed"
    return out


def describe() -> dict[str, Any]:
    """The whole report of `c2p env`."""
    from .. import __version__
    from ..models.precision import cpu_bf16
    from ..option_table import usable_cpus
    from ..store.paths import cache_root

    t = torch_info()
    return {
        "clip2point": __version__,
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": platform.platform(),
        "cpus": usable_cpus(),
        "cpu_bf16": cpu_bf16(),
        "torch": t,
        "packages": package_versions(),
        "backends": backends(bool(t.get("cuda_available"))),
        "cache_dir": str(cache_root()),
        "environment": {k: os.environ[k] for k in ENV_VARS if k in os.environ},
    }
