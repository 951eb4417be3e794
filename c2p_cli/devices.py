"""Turning a --device option into a torch.device, with one-line errors for what is not there."""

from __future__ import annotations

from .errors import BackendUnavailableError, Opt, OptionError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")


def resolve_device(spec: str = "auto"):
    """`auto` -> cuda when available, else cpu; `cpu`; `cuda` / `cuda:N` (must exist)."""
    import torch

    text = str(spec).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        index = text.partition(":")[2]
        if index and not index.isdigit():
            raise OptionError(Opt("device"), f" must be one of {', '.join(DEVICE_CHOICES)}, got {spec!r}")
        if not torch.cuda.is_available():
            raise BackendUnavailableError(
                f"device {spec!r}: CUDA is not available here (torch {torch.__version__}, "
                f"built for CUDA {torch.version.cuda or 'none'}); use the cpu or auto device"
            )
        if index and int(index) >= torch.cuda.device_count():
            raise BackendUnavailableError(
                f"device {spec!r}: only {torch.cuda.device_count()} CUDA device(s) visible"
            )
        return torch.device(text)
    raise OptionError(Opt("device"), f" must be one of {', '.join(DEVICE_CHOICES)}, got {spec!r}")
