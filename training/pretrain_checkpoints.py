"""Pre-training checkpoints: RUN/checkpoints/step-N folders, latest.json, and the resume checks.

    RUN/checkpoints/latest.json     {"path": "step-000123"}: the last complete checkpoint
    RUN/checkpoints/step-N/         state.safetensors (weights, w, optimiser tensors, RNG) and
                                    state.json (epoch, position, step, optimiser / scheduler scalars)

A checkpoint folder is written under a temporary name and renamed, then latest.json is replaced
atomically, so a run killed at any moment resumes from its last complete checkpoint. The tensors
and RNG states are the trainers' common resume state (`clip2point.store.resume`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from torch import nn

from clip2point.errors import CheckpointError

CHECKPOINT_FORMAT = "c2p-pretrain-checkpoint"
# Options a resumed run must share with its checkpoint (and the world size, recorded apart).
RESUME_MUST_MATCH = ("model", "batch_size", "accumulate", "optimizer", "fold", "seed", "lr", "min_lr",
                     "weight_decay", "restart_epochs")


def latest_checkpoint(out: str | os.PathLike) -> Path | None:
    """The folder of RUN's last complete checkpoint, or None. latest.json must name a `step-N`
    folder of RUN/checkpoints (`clip2point.store.run_files.checkpoint_folder`): resume never reads
    outside the run folder."""
    from clip2point.store.run_files import checkpoint_folder

    root = Path(out) / "checkpoints"
    folder = checkpoint_folder(root)
    if folder is None:
        return None
    if not (folder / "state.safetensors").is_file() or not (folder / "state.json").is_file():
        raise CheckpointError(f"{root / 'latest.json'}: points to {folder.name}, which is incomplete or missing")
    return folder


def save_checkpoint(
    out: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    info: dict,
    device: torch.device,
    keep: int = 1,
) -> Path:
    """Write RUN/checkpoints/step-N atomically and point latest.json at it; prune older ones."""
    from clip2point.store.checkpoints import save_tensors, write_json
    from clip2point.store.resume import training_state

    root = out / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{info['step']:08d}"
    tmp = root / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    tensors, opt_meta = training_state(model, "model", optimizer, device)
    save_tensors(tmp / "state.safetensors", tensors)
    write_json(tmp / "state.json", {
        "format": CHECKPOINT_FORMAT, **info, "optimizer": opt_meta, "scheduler": scheduler.state_dict(),
    })
    final = root / name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    write_json(root / "latest.json", {"path": name, "step": info["step"], "epoch": info["epoch"]})
    kept = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))
    for old in kept[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def check_resumable(folder: Path, options: dict, world_size: int) -> dict:
    """The checkpoint's state.json, after checking that a run with `options` (its configuration as a
    dict) may continue it.

    Raises OptionError naming every option (and the world size) that differs from the saved run:
    batch positions, the batch order and the schedule's period depend on them, and the restored
    optimiser and scheduler states would silently keep the old lr, floor and decay.
    """
    from clip2point.store.checkpoints import read_json
    from clip2point.store.resume import refuse_changed_options
    from clip2point.store.run_files import PRETRAIN_STATE, check_fields

    meta = read_json(folder / "state.json")
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{folder / 'state.json'}: not a c2p pre-training checkpoint")
    check_fields(folder / "state.json", meta, PRETRAIN_STATE)
    world = []
    if "world_size" in meta and int(meta["world_size"]) != world_size:
        world.append(f"world size (processes) {int(meta['world_size'])} (now {world_size})")
    refuse_changed_options(folder, meta.get("config") or {}, options, RESUME_MUST_MATCH, other_changes=world)
    return meta


def restore_checkpoint(folder: Path, model, optimizer, scheduler, options: dict, world_size: int,
                       device: torch.device, batches: int) -> tuple[int, int, int]:
    """Load a checkpoint into the model, optimiser, scheduler and RNGs; returns (step, epoch, position)."""
    from clip2point.store.checkpoints import load_tensors
    from clip2point.store.resume import restore_training_state

    meta = check_resumable(folder, options, world_size)
    tensors = load_tensors(folder / "state.safetensors", device="cpu")
    restore_training_state(tensors, folder / "state.safetensors", model, "model", optimizer, meta["optimizer"], device)
    try:
        scheduler.load_state_dict(meta["scheduler"])
    except (RuntimeError, KeyError, ValueError) as e:
        raise CheckpointError(f"{folder}: its scheduler state does not fit ({str(e).splitlines()[0]})") from e
    position = int(meta.get("position", 0))
    if position >= batches:
        raise CheckpointError(f"{folder}: stopped at batch {position} of an epoch of {batches}; the data changed")
    return int(meta["step"]), int(meta["epoch"]), position
