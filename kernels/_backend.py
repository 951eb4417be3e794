"""Which renderer runs: the Triton kernel for CUDA tensors when triton imports, torch otherwise.

`C2P_RENDER_BACKEND` (auto | torch | triton) replaces a caller's "auto"; an explicit
backend="torch" / "triton" argument wins over the variable.
"""

from __future__ import annotations

import functools
import logging
import os

import torch

from clip2point import option_table
from clip2point.errors import BackendUnavailableError, UsageError

BACKENDS = option_table.choices("render_backend")
ENV_VAR = "C2P_RENDER_BACKEND"

log = logging.getLogger("c2p.render")
_logged: set[tuple[str, str]] = set()


@functools.lru_cache(maxsize=1)
def triton_import_error() -> str | None:
    """None when triton imports, else why not (one line)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install raising anything else
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return None


def interpreter_enabled() -> bool:
    """TRITON_INTERPRET=1: Triton kernels run on CPU tensors through its numpy interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def _log_once(choice: str, reason: str) -> None:
    if (choice, reason) not in _logged:
        _logged.add((choice, reason))
        log.debug("depth rendering backend: %s (%s)", choice, reason)


def resolve_backend(backend: str, device: torch.device) -> str:
    """ "torch" or "triton" for tensors on `device`; raises for an unknown or unusable backend."""
    requested = backend
    if backend == "auto":
        env = os.environ.get(ENV_VAR, "").strip().lower()
        if env:
            if env not in BACKENDS:
                raise UsageError(f"{ENV_VAR} must be one of {', '.join(BACKENDS)}, got {env!r}")
            backend, requested = env, f"{ENV_VAR}={env}"
    if backend not in BACKENDS:
        raise UsageError(f"render backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "torch":
        _log_once("torch", f"requested by {requested}")
        return "torch"
    if backend == "auto":
        if device.type == "cuda" and triton_import_error() is None:
            _log_once("triton", "auto: CUDA tensors and triton imports")
            return "triton"
        why = "triton does not import" if device.type == "cuda" else f"auto: {device.type} tensors"
        _log_once("torch", why)
        return "torch"
    error = triton_import_error()
    if error is not None:
        raise BackendUnavailableError(
            f"render backend 'triton' requested by {requested}, but triton does not import ({error})"
        )
    if device.type != "cuda" and not interpreter_enabled():
        raise BackendUnavailableError(
            f"render backend 'triton' needs CUDA tensors (got {device.type}); set TRITON_INTERPRET=1 to run it on CPU, slowly"
        )
    _log_once("triton", f"requested by {requested}")
    return "triton"
