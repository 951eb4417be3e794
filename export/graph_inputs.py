"""The one check of depth maps against the input shape an exported graph or engine was built for
(both runtime heads use it: `runtime.OnnxRuntimeHead`, `tensorrt.TensorRTHead`)."""

from __future__ import annotations

from typing import Any

from clip2point.errors import UsageError


def check_depth(depth, expected: list[Any], what: str) -> None:
    """UsageError when `depth` does not have the graph's fixed dims (V, C, S, S)."""
    fixed = [d if isinstance(d, int) else None for d in expected]
    got = list(depth.shape)
    if len(got) != len(fixed) or any(f is not None and f != g for f, g in zip(fixed, got, strict=True)):
        raise UsageError(f"{what}: depth maps of shape {got} do not fit the exported input {expected}")
