"""What both trainers (few-shot adapters, pre-training) save to continue a run exactly, and how a
resume is checked: one place, so that the two cannot drift apart.

A resume state is a safetensors file of tensors (no pickle) beside a JSON file of scalars:
    <prefix>.<name>   the trained module's weights
    optim.<id>.<name> the optimiser's tensors (`checkpoints.optimizer_state`; its scalars go to JSON)
    rng.torch         torch's CPU generator (dropout, sampling)
    rng.cuda          the CUDA generator of the run's device, when it runs on CUDA
    rng.shuffle       a trainer's own shuffling generator, when it has one
Every field is checked (`run_files.check_rng_tensors`, `checkpoints.load_optimizer_state`)
before it is loaded; a state that does not fit the model is a CheckpointError naming the file.

The metrics file (one JSON line per step or epoch) is cut back to the state a run resumes from:
later lines were written after the last saved state and will be written again.

A resumed run must keep the options its batches and schedule depend on; `refuse_changed_options`
names every one that changed, by its Python name (the CLI spells them as flags).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, Opt, OptionError
from .atomic import atomic_write_bytes
from .checkpoints import load_optimizer_state, optimizer_state


def training_state(
    module: torch.nn.Module,
    prefix: str,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    shuffle: torch.Generator | None = None,
) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, optimiser scalars) of a resume state: the module's weights under `prefix.`, the
    optimiser's tensors and the RNG states (see the module docstring)."""
    tensors = {f"{prefix}.{k}": v for k, v in module.state_dict().items()}
    opt_tensors, opt_meta = optimizer_state(optimizer)
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    if shuffle is not None:
        tensors["rng.shuffle"] = shuffle.get_state()
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    return tensors, opt_meta


def restore_training_state(
    tensors: dict[str, torch.Tensor],
    path: str | Path,
    module: torch.nn.Module,
    prefix: str,
    optimizer: torch.optim.Optimizer,
    optimizer_meta: dict,
    device: torch.device,
    shuffle: torch.Generator | None = None,
) -> None:
    """Load a resume state (read from `path`) into the module, the optimiser and the RNGs."""
    from .run_files import check_rng_tensors

    check_rng_tensors(tensors, path, ["rng.torch", "rng.cuda"] + (["rng.shuffle"] if shuffle is not None else []))
    start = len(prefix) + 1
    try:
        module.load_state_dict({k[start:]: v for k, v in tensors.items() if k.startswith(prefix + ".")})
        load_optimizer_state(optimizer, tensors, optimizer_meta)
        torch.set_rng_state(tensors["rng.torch"])
        if shuffle is not None:
            shuffle.set_state(tensors["rng.shuffle"])
        if device.type == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"], device)
    except (KeyError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot resume from it ({str(e).splitlines()[0]})") from e


def truncate_metrics(path: Path, key: str, upto: int) -> list[dict]:
    """Keep the lines of a metrics file whose `key` (step or epoch) is at most `upto`, drop lines
    cut by a kill, rewrite the file atomically and return the kept records."""
    lines, records = [], []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get(key, 0) <= upto:
                lines.append(line)
                records.append(record)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, "".join(line + "\n" for line in lines).encode())
    return records


def changed_options(saved: Mapping[str, Any], current: Mapping[str, Any], keys: Sequence[str],
                    recorded_defaults: Mapping[str, Any] | None = None) -> list[str]:
    """The options of `keys` whose value in `current` differs from the saved run's. An option the
    saved run did not record takes its value from `recorded_defaults` (what a run made before the
    option existed meant), else it is not compared."""
    saved = {**(recorded_defaults or {}), **saved}
    return [key for key in keys if key in saved and saved[key] != current.get(key)]


def refuse_changed_options(
    where: str | Path,
    saved: Mapping[str, Any],
    current: Mapping[str, Any],
    keys: Sequence[str],
    *,
    recorded_defaults: Mapping[str, Any] | None = None,
    other_changes: Sequence[str] = (),
) -> None:
    """OptionError naming each changed option (`changed_options`) with its saved and current
    values, then `other_changes` (identities, the world size: worded by the caller)."""
    saved = {**(recorded_defaults or {}), **saved}
    pieces: list[str | Opt] = []
    for key in changed_options(saved, current, keys):
        pieces += [", " if pieces else "", Opt(key), f" {saved[key]!r} (now {current.get(key)!r})"]
    for change in other_changes:
        pieces += [", " if pieces else "", change]
    if pieces:
        raise OptionError(f"{where}: cannot resume with different options: ", *pieces,
                          "; resume with the same ones, or start a new run folder")
