"""Where a run executes: `resolve_device` for --device, the torch.distributed set-up shared by every
command that runs under torchrun (classify, eval, fewshot, pretrain), and the collectives they use.

torchrun exports RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; when they are set
(WORLD_SIZE > 1) the process group is initialised with NCCL on CUDA and gloo on CPU, each rank
uses the GPU of its LOCAL_RANK, and only rank 0 writes files or shows progress. Without them the
same code runs as a single process (world size 1) and every collective below is a no-op.

Collective timeout: NCCL's default of 10 minutes is shorter than what one rank may do while the
others wait in a collective (rank 0's zero-shot validation after an epoch, a first read of a large
pairs set from a slow file system, a rank with a larger share of slow files), so the group is
created with `DEFAULT_TIMEOUT_MIN` (120) minutes, or `C2P_DIST_TIMEOUT_MIN` minutes when that
variable is set.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch

from .errors import BackendUnavailableError, Opt, OptionError, UsageError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")
TIMEOUT_ENV = "C2P_DIST_TIMEOUT_MIN"
DEFAULT_TIMEOUT_MIN = 120


def resolve_device(spec: str = "auto"):
    """`auto` -> cuda when available, else cpu; `cpu`; `cuda` / `cuda:N` (must exist)."""
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


def collective_timeout() -> timedelta:
    """How long a collective (a barrier above all) may wait: `C2P_DIST_TIMEOUT_MIN` minutes, default 120."""
    value = os.environ.get(TIMEOUT_ENV)
    if value is None or value.strip() == "":
        return timedelta(minutes=DEFAULT_TIMEOUT_MIN)
    try:
        minutes = float(value)
    except ValueError as e:
        raise UsageError(f"environment variable {TIMEOUT_ENV}={value!r} is not a number of minutes") from e
    if not minutes > 0:
        raise UsageError(f"environment variable {TIMEOUT_ENV}={value!r} must be a positive number of minutes")
    return timedelta(minutes=minutes)


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
        dist.init_process_group(backend=backend, rank=rank, world_size=world, timeout=collective_timeout())
        owned = True
    return DistContext(rank, world, local_rank, device, owned)


def teardown(ctx: DistContext) -> None:
    """Destroy the process group if `setup` created it."""
    import torch.distributed as dist

    if ctx.initialised_here and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def process_group(device: torch.device) -> Iterator[DistContext]:
    """`setup(device)` for the block, then `teardown`. A block that ends normally first waits for
    every rank (a barrier): a rank that destroyed its gloo group while a peer still held its end
    was aborted at exit ("terminate called without an active exception", exit -6). A block that
    raises tears down at once (its peers may never reach a barrier; torchrun stops them)."""
    ctx = setup(device)
    try:
        yield ctx
    except BaseException:
        teardown(ctx)
        raise
    barrier(ctx)
    teardown(ctx)


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        import torch.distributed as dist

        dist.barrier()


def gather_objects(ctx: DistContext, obj) -> list | None:
    """Every rank's picklable `obj`, in rank order, on rank 0 (None on the others; [obj] alone)."""
    if not ctx.distributed:
        return [obj]
    import torch.distributed as dist

    out = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_object(ctx: DistContext, obj):
    """Rank 0's picklable `obj` on every rank (`obj` itself on one process); the other ranks pass
    anything (None)."""
    if not ctx.distributed:
        return obj
    import torch.distributed as dist

    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shard(n: int, ctx: DistContext) -> range:
    """The indices of n inputs that this rank takes: every world_size-th, from its rank (so a
    folder sorted by class or size spreads evenly over the ranks)."""
    return range(ctx.rank, n, ctx.world_size)


def cores_per_process() -> int:
    """CPU cores this process may use: the ones it is allowed to run on, split among the ranks of
    this node when torchrun started several here."""
    from .option_table import usable_cpus

    cores = usable_cpus()
    local = max(_env_int("LOCAL_WORLD_SIZE", 1), 1)
    return max(cores // local, 1)


# --- collectives of the trainers (no-ops on one process) -----------------------------------------


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
