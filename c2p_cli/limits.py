"""Bounds of numeric options, checked before any file is read or any model loads.

Standard library only, so that the CLI checks its options without importing torch, and any
library entry point can call the same checks. Each check raises `OptionError` naming the Python
option (the CLI prints its flag).
"""

from __future__ import annotations

import os

from .errors import Opt, OptionError

# Points sampled per shape. A 224 x 224 depth map has 50,176 pixels per view, so a million points
# already cover every pixel many times over; more only costs memory (12 bytes per point per cloud,
# times the batch), and a billion asked of a mesh sampler is 7+ GiB before the first file.
MAX_SAMPLE_POINTS = 1_000_000
# numpy's legacy seeding and most samplers take 32-bit seeds; negative seeds fail in numpy.
MAX_SEED = 2**32 - 1
# Shapes per batch: the exported graphs' dynamic batch dimension ends at 2**16.
MAX_BATCH = 1 << 16
# Reader processes per CPU core: more only adds processes that wait for a core.
WORKERS_PER_CORE = 2
MIN_WORKER_CAP = 4


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def max_workers() -> int:
    """The most reader processes allowed here: two per usable core, at least 4."""
    return max(MIN_WORKER_CAP, WORKERS_PER_CORE * usable_cpus())


def _num(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def check_range(name: str, value: float, low: float | None = None, high: float | None = None, why: str = "") -> None:
    """OptionError `name must be ...` when `value` is outside [low, high] (either end open when None)."""
    if value is None:
        return
    if (low is None or value >= low) and (high is None or value <= high):
        return
    if low is not None and high is not None:
        want = f" must be between {_num(low)} and {_num(high)}"
    elif low is not None:
        want = f" must be at least {_num(low)}"
    else:
        want = f" must be at most {_num(high)}"
    raise OptionError(Opt(name), f"{want}{why}, got {_num(value)}")


def check_workers(workers: int | None) -> None:
    """0 (read in-process) up to `max_workers()`; None means the default and is always fine."""
    if workers is not None:
        check_range("workers", workers, 0, max_workers(), f" ({WORKERS_PER_CORE} per usable CPU core, {usable_cpus()} here)")


def check_points(n_points: int | None, name: str = "n_points") -> None:
    """1 up to MAX_SAMPLE_POINTS points per shape."""
    check_range(name, n_points, 1, MAX_SAMPLE_POINTS)


def check_seed(seed: int | None) -> None:
    """0 up to 2**32 - 1."""
    check_range("seed", seed, 0, MAX_SEED)
