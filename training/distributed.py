"""torch.distributed helpers of `c2p pretrain` under torchrun (single or multi node).

The set-up (ranks from torchrun's environment, NCCL on CUDA / gloo on CPU, the long collective
timeout of `C2P_DIST_TIMEOUT_MIN`) is `clip2point.distributed`, shared with classify and eval;
this module adds the collectives training needs. On one process every collective is a no-op.
"""

from __future__ import annotations

import hashlib

import torch

# The set-up lives in the core (classify and eval run under torchrun too); re-exported here.
from clip2point.distributed import (  # noqa: F401
    DEFAULT_TIMEOUT_MIN,
    TIMEOUT_ENV,
    DistContext,
    _env_int,
    barrier,
    collective_timeout,
    setup,
    teardown,
)


def any_rank(ctx: DistContext, flag: bool) -> bool:
    """True when `flag` is true on any rank (every rank gets the same answer, so all stop together)."""
    if not ctx.distributed:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def mean_across(ctx: DistContext, values: dict[str, float]) -> dict[str, float]:
    """The mean of each value over all ranks (identity on one process)."""
    if not ctx.distributed or not values:
        return values
    import torch.distributed as dist

    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    t /= ctx.world_size
    return dict(zip(keys, t.tolist(), strict=True))


def sum_across(ctx: DistContext, tensor: torch.Tensor, chunk_rows: int = 4096) -> torch.Tensor:
    """The element-wise sum of a CPU tensor over all ranks (itself on one process), returned on the CPU.

    Reduced on this rank's device `chunk_rows` rows at a time, so a large feature table never
    needs to fit in GPU memory at once.
    """
    if not ctx.distributed:
        return tensor
    import torch.distributed as dist

    out = tensor.contiguous().clone()
    for start in range(0, max(out.shape[0], 1), chunk_rows):
        part = out[start:start + chunk_rows].to(ctx.device)
        dist.all_reduce(part)
        out[start:start + chunk_rows] = part.cpu()
    return out


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 (first 16 hex digits) of a state dict's names and exact tensor bytes."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def gather_digests(ctx: DistContext, digest: str) -> list[str]:
    """Every rank's digest, in rank order (so rank 0 can record whether the replicas agree)."""
    if not ctx.distributed:
        return [digest]
    import torch.distributed as dist

    codes = torch.tensor([ord(c) for c in digest], dtype=torch.int64, device=ctx.device)
    parts = [torch.empty_like(codes) for _ in range(ctx.world_size)]
    dist.all_gather(parts, codes)
    return ["".join(chr(int(c)) for c in p.tolist()) for p in parts]
