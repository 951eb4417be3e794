"""Encoder precision: which one this machine runs fast, and applying it to a classifier once.

- `fp32`: the official forward, exact; the default.
- `bf16` on a CPU with native bfloat16 instructions (`avx512_bf16` / `amx_bf16` on x86, `bf16` on
  Arm): the visual towers' weights and their inputs are cast to bfloat16, not autocast (autocast
  casts every weight again on every call: 1.4x where the cast weights give 2x). ResNet towers also
  get their BatchNorms folded into the convolution before them (in float32, before the cast) and
  channels-last memory (bf16 BatchNorm and NCHW convolutions are slow paths of oneDNN). The
  projection, the text features and the head stay float32, and every encoder returns float32.
- `fp16` / `bf16` on CUDA: the encoders run under CUDA autocast (the projection stays float32).
- `auto`: bf16 on a CPU with native bf16, fp16 on CUDA (every CUDA GPU since Volta has fp16 tensor
  cores, bf16 only since Ampere, and the TensorRT engine is FP16 too), fp32 elsewhere and for
  exported engines (they keep their own precision).

The precision lives on each `DepthEncoder` (`clip2point.models.encoders`), the one path classify,
eval and few-shot feature extraction share: `apply_precision` sets it once, when a classifier is
built, and everything that encodes through that classifier gets it.

CPU detection reads /proc/cpuinfo (no torch import: `c2p env` uses it) and, when torch is already
imported, also asks torch (`torch.cpu.get_capabilities`), which sees CPUs without /proc.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path

from ..errors import Opt, OptionError

PRECISIONS = ("fp32", "fp16", "bf16", "auto")
DEFAULT_PRECISION = "fp32"
# /proc/cpuinfo flags (x86 "flags", Arm "Features") and torch.cpu.get_capabilities() keys that
# mean bfloat16 dot products in hardware.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16", "svebf16", "sve_bf16"})
CPUINFO = Path("/proc/cpuinfo")


def precision_option() -> dict:
    """What the run-description table declares for `precision`: choices, default and help."""
    return {
        "choices": PRECISIONS,
        "default": DEFAULT_PRECISION,
        "help": "Encoder precision: fp32 (exact), bf16 (CPUs with native bf16, or CUDA), fp16 (CUDA), "
                "auto (bf16 on such CPUs, fp16 on CUDA, else fp32). The projection stays fp32.",
    }  # fmt: skip


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (first processor); empty where there is no such file."""
    try:
        text = CPUINFO.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


def _torch_bf16_capabilities() -> list[str]:
    """bf16 capabilities torch sees, only when torch is imported already (never imports it)."""
    torch = sys.modules.get("torch")
    capabilities = getattr(getattr(torch, "cpu", None), "get_capabilities", None)
    if capabilities is None:
        return []
    try:
        caps = capabilities()
    except Exception:  # an older or unusual build: the flags decide
        return []
    return sorted(k for k in NATIVE_BF16_FLAGS if caps.get(k))


def cpu_bf16() -> dict:
    """{"native": bool, "flags": [...], "source": ...}: whether this CPU has bfloat16 instructions."""
    flags = sorted(cpu_flags() & NATIVE_BF16_FLAGS)
    seen = _torch_bf16_capabilities()
    sources = (["/proc/cpuinfo"] if cpu_flags() else []) + (["torch"] if "torch" in sys.modules else [])
    return {"native": bool(flags or seen), "flags": sorted(set(flags) | set(seen)), "source": " + ".join(sources) or "unknown"}


def native_bf16_cpu() -> bool:
    """True when the CPU has bfloat16 instructions (bf16 then runs the encoders about 2x faster than fp32)."""
    return cpu_bf16()["native"]


def resolve_precision(precision: str | None, device_type: str, torch_model: bool = True) -> str:
    """The precision a run uses: "auto" resolved, the rest checked against the device and the model."""
    chosen = DEFAULT_PRECISION if precision is None else str(precision).lower()
    if chosen not in PRECISIONS:
        raise OptionError(Opt("precision"), f" must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if chosen == "auto":
        if not torch_model:
            return "fp32"
        if device_type == "cuda":
            return "fp16"
        return "bf16" if device_type == "cpu" and native_bf16_cpu() else "fp32"
    if chosen == "fp32":
        return chosen
    if not torch_model:
        raise OptionError(Opt("precision", chosen), " applies to torch models; an exported engine keeps its own precision")
    if device_type == "cuda":
        return chosen
    if chosen == "fp16" or device_type != "cpu":
        raise OptionError(Opt("precision", chosen), f" needs a CUDA device (on {device_type}: fp32, or bf16 on CPUs with native bf16)")
    if not native_bf16_cpu():
        raise OptionError(
            Opt("precision", chosen), " needs a CPU with bfloat16 instructions (avx512_bf16 / amx_bf16 / Arm bf16); "
            "this one has none, where bf16 is slower than fp32: use fp32 or auto"
        )
    return chosen


def _encoders(module):
    from .encoders import DepthEncoder

    return [m for m in module.modules() if isinstance(m, DepthEncoder)]


def apply_precision(classifier, precision: str | None, device=None) -> str:
    """Run `classifier`'s encoders at `precision` from now on; returns the precision resolved.

    `classifier` is a `PointCloudClassifier` (its head and device are used) or a module holding
    `DepthEncoder`s (a DepthMapClassifier, an AdapterClassifier; pass `device`). Applying the
    precision a classifier has already is a no-op. Casting is one-way: a classifier made bf16 is
    not made fp32 again (build it again), and asking for it raises OptionError.
    """
    import torch

    head = getattr(classifier, "head", classifier)
    if device is None:
        device = getattr(classifier, "device", None)
    if device is None:
        device = next((p.device for p in head.parameters()), torch.device("cpu")) if isinstance(head, torch.nn.Module) else "cpu"
    device_type = torch.device(device).type
    is_torch = isinstance(head, torch.nn.Module)
    resolved = resolve_precision(precision, device_type, is_torch)
    current = _precision_of(head) if is_torch else DEFAULT_PRECISION  # the encoders' own: they hold it
    if resolved == current:
        if hasattr(classifier, "head"):
            classifier.precision = resolved
        return resolved
    if current != DEFAULT_PRECISION:
        raise OptionError(Opt("precision", resolved), f" asked of a classifier built in {current}: build it again")
    encoders = _encoders(head)
    if not encoders:
        raise OptionError(Opt("precision", resolved), " applies to clip2point's depth encoders; this head has none")
    for encoder in encoders:
        if device_type == "cuda":
            encoder.autocast = torch.float16 if resolved == "fp16" else torch.bfloat16
        else:
            _to_cpu_bf16(encoder)
        encoder.precision = resolved
    if hasattr(classifier, "head"):
        classifier.precision = resolved
        if isinstance(getattr(classifier, "meta", None), dict):
            classifier.meta["precision"] = resolved
    return resolved


def _precision_of(module) -> str:
    found = {getattr(e, "precision", DEFAULT_PRECISION) for e in _encoders(module)}
    return found.pop() if len(found) == 1 else DEFAULT_PRECISION


def _to_cpu_bf16(encoder) -> None:
    """Fold BatchNorms (ResNet towers), cast weights to bfloat16 except the folded stem's (it derives
    its 1-channel kernel in float32, then casts), and go channels-last where convolutions dominate."""
    import torch

    from .encoders import FoldedStemConv

    visual = encoder.visual
    folded = fold_batch_norms(visual)
    for module in visual.modules():
        if isinstance(module, FoldedStemConv):
            continue
        for tensor in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
            if tensor.is_floating_point():
                tensor.data = tensor.data.to(torch.bfloat16)
    encoder.cast_inputs = torch.bfloat16
    if folded:
        visual.to(memory_format=torch.channels_last)
        encoder.channels_last = True


def fold_batch_norms(visual) -> int:
    """Fold each BatchNorm of an open_clip ModifiedResNet into the convolution it follows, in float32,
    in place (the BatchNorm becomes Identity). Returns how many were folded (0 for other towers).

    Exact up to float rounding: BN(conv(x)) = s * conv(x) + t with s = gamma / sqrt(var + eps),
    t = beta - s * mean, so the convolution's weight is scaled by s per output channel and t
    becomes its bias. The folded stem (FoldedStemConv) takes the same scaling: both its kernel and
    its border bias are linear in its weight.
    """
    from open_clip.modified_resnet import Bottleneck, ModifiedResNet
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    pairs = []
    for module in visual.modules():
        if isinstance(module, (ModifiedResNet, Bottleneck)):
            pairs += [(module, f"conv{i}", f"bn{i}") for i in (1, 2, 3)]
            if isinstance(getattr(module, "downsample", None), nn.Sequential):
                pairs.append((module.downsample, "0", "1"))
    for parent, conv_name, bn_name in pairs:
        conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
        if not isinstance(bn, nn.BatchNorm2d) or bn.training:
            continue
        weight, bias = fuse_conv_bn_weights(
            conv.weight.float(), None if conv.bias is None else conv.bias.float(),
            bn.running_mean.float(), bn.running_var.float(), bn.eps, bn.weight.float(), bn.bias.float(),
        )  # fmt: skip
        conv.weight, conv.bias = weight.requires_grad_(False), bias.requires_grad_(False)
        setattr(parent, bn_name, nn.Identity())
    return len(pairs)
