"""torch.distributed set-up for `c2p pretrain` under torchrun (single or multi node).

torchrun exports RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; when they are set
(WORLD_SIZE > 1) the process group is initialised with NCCL on CUDA and gloo on CPU, each rank
uses the GPU of its LOCAL_RANK, and only rank 0 writes files or shows progress. Without them the
same code runs as a single process (world size 1) and every collective below is a no-op.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch

from c2p_cli.errors import BackendUnavailableError, UsageError


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank, world size, local rank, its device, and whether it owns a group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as e:
        raise UsageError(f"environment variable {name}={value!r} is not an integer") from e


def setup(device: torch.device) -> DistContext:
    """Initialise the process group when launched by torchrun with WORLD_SIZE > 1.

    `device` is the device asked for (`--device`); on CUDA each rank takes `cuda:LOCAL_RANK`.
    """
    import torch.distributed as dist

    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistContext(device=device)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not dist.is_available():
        raise BackendUnavailableError("this torch build has no torch.distributed; run without torchrun")
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise BackendUnavailableError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s) visible"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    owned = False
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
        owned = True
    return DistContext(rank, world, local_rank, device, owned)


def teardown(ctx: DistContext) -> None:
    """Destroy the process group if `setup` created it."""
    import torch.distributed as dist

    if ctx.initialised_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        import torch.distributed as dist

        dist.barrier()


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
