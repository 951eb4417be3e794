"""Training a (Gated) Dual-Path Adapter on cached per-view features: epochs, model selection,
checkpoints and an exact resume.

A run folder receives (the few-shot run, `clip2point.training.fewshot`, adds its config and shots):
    metrics.jsonl        one line per epoch: loss, train / val (or test) accuracy, lr, time
    best.safetensors     adapter weights of the selected epoch: the last one (`select="last"`, the
                         default), the best validation accuracy (`"val"`, ties to the lower
                         validation loss), or the best TEST accuracy (`"test"`, the paper's protocol)
    last.safetensors     adapter weights after the last completed epoch
    state.safetensors    adapter weights, AdamW moments, RNG states (`clip2point.store.resume`) ...
    state.json           ... and the epoch, best-so-far and optimiser hyper-parameters, for resume

Training is deterministic for a seed on CPU, and a resumed run ends bit-identical to an
uninterrupted one: the state saved after each epoch holds everything the next epoch consumes
(weights, AdamW moments and step, torch's RNG for dropout, the shuffling generator).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from clip2point import option_table
from clip2point.errors import Opt, OptionError, UsageError
from clip2point.events import EventHook, emit
from clip2point.store.checkpoints import read_json, save_tensors, write_json
from clip2point.store.resume import truncate_metrics

from .features import FeatureSet

SELECTIONS = option_table.choices("select")
# Said wherever the results of a selection are shown (config.json, summary.json, the CLI, reports).
SELECTION_NOTES = {"test": "the paper's protocol: epoch chosen on the test split (optimistic)"}


@torch.no_grad()
def evaluate_features(adapter: torch.nn.Module, feats: FeatureSet, batch_size: int = 256) -> tuple[float, float, torch.Tensor]:
    """(mean loss, accuracy, predictions) of an adapter in eval mode on cached features."""
    was_training = adapter.training
    adapter.eval()
    device = next(adapter.parameters()).device
    losses, preds = [], []
    for s in range(0, len(feats), batch_size):
        logits = adapter(feats.depth[s : s + batch_size].to(device), feats.clip[s : s + batch_size].to(device))
        y = feats.targets[s : s + batch_size].to(device)
        losses.append(F.cross_entropy(logits, y, reduction="sum").item())
        preds.append(logits.argmax(-1).cpu())
    adapter.train(was_training)
    pred = torch.cat(preds)
    return sum(losses) / len(feats), float((pred == feats.targets).float().mean()), pred


def subset(feats: FeatureSet, keep: Sequence[int]) -> FeatureSet:
    """The samples of `feats` whose dataset index is in `keep`, in feats' order."""
    wanted = set(keep)
    rows = [j for j, i in enumerate(feats.indices) if i in wanted]
    idx = torch.tensor(rows, dtype=torch.long)
    return FeatureSet(
        depth=feats.depth[idx], clip=feats.clip[idx], targets=feats.targets[idx],
        indices=[feats.indices[j] for j in rows], sample_ids=[feats.sample_ids[j] for j in rows],
        skipped=list(feats.skipped),
    )


def adapter_tensors(adapter: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's state dict as a flat dict of tensors (what best / last.safetensors hold)."""
    return {k: v for k, v in adapter.state_dict().items()}


def _save_state(run: Path, adapter, opt, gen: torch.Generator, epoch: int, best: dict, device: torch.device) -> None:
    from clip2point.store.resume import training_state

    tensors, opt_meta = training_state(adapter, "adapter", opt, device, shuffle=gen)
    save_tensors(run / "state.safetensors", tensors)
    write_json(run / "state.json", {"epoch": epoch, "best": best, "optimizer": opt_meta})


def _load_state(run: Path, adapter, opt, gen: torch.Generator, device: torch.device,
                split: str | None = None) -> tuple[int, dict]:
    """(epoch, best) of the run's resume state, loaded into the adapter, optimiser and RNGs after
    checking every field it uses (`clip2point.store.run_files`; `split`: the selection set's name)."""
    from clip2point.store.checkpoints import load_tensors
    from clip2point.store.resume import restore_training_state
    from clip2point.store.run_files import FEWSHOT_STATE, check_fewshot_best, check_fields

    meta = read_json(run / "state.json")
    check_fields(run / "state.json", meta, FEWSHOT_STATE)
    if split is not None:
        check_fewshot_best(meta["best"], run / "state.json", split)
    tensors = load_tensors(run / "state.safetensors")
    restore_training_state(tensors, run / "state.safetensors", adapter, "adapter", opt, meta["optimizer"], device,
                           shuffle=gen)
    return int(meta["epoch"]), dict(meta["best"])


def _batches(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    """A seeded shuffle cut into batches; a last batch of one sample joins the previous one
    (batch norm cannot train on a single sample)."""
    perm = torch.randperm(n, generator=gen)
    chunks = list(perm.split(batch_size))
    if len(chunks) > 1 and len(chunks[-1]) == 1:
        chunks[-2] = torch.cat([chunks[-2], chunks.pop()])
    return chunks


@dataclass
class TrainResult:
    epochs: int
    best: dict
    last: dict
    history: list[dict] = field(default_factory=list)


class AdapterTrainer:
    """Trains a DualPathAdapter on cached features, in named stages.

    `run()` = `setup()` (optimiser, shuffling generator, resume state, metrics file), then per epoch
    `epoch()` (one shuffled pass over the training features) and `end_epoch()` (validation, model
    selection, checkpoints, the metrics line, the event), then `finish()` (the result). The stages
    run inside a forked RNG seeded with `seed`, so training never disturbs the caller's RNG.

    `train` is one FeatureSet, or a list of R (the same samples, resampled point sets): each epoch
    every sample then trains on one of its R feature sets, drawn with a generator seeded by
    (seed, epoch). `val` is the selection set: validation shots (`select="val"`) or the test split
    (`select="test"`, metrics keys test_acc / test_loss).
    """

    def __init__(
        self,
        adapter: torch.nn.Module,
        train: FeatureSet | Sequence[FeatureSet],
        val: FeatureSet | None,
        run: str | Path,
        *,
        epochs: int,
        batch_size: int = 32,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        seed: int = 0,
        select: str = "last",
        resume: bool = False,
        save_every: int = 1,
        on_event: EventHook | None = None,
        refresh_features: Callable[[], tuple[FeatureSet, FeatureSet | None]] | None = None,
    ):
        resamples = list(train) if isinstance(train, (list, tuple)) else [train]
        train = resamples[0]
        if len(train) < 2:
            raise UsageError(f"need at least 2 training samples, got {len(train)}")
        if select not in SELECTIONS:
            raise OptionError(Opt("select"), f" must be one of {', '.join(SELECTIONS)}, got {select!r}")
        if select == "val" and (val is None or len(val) == 0):
            raise OptionError("validation selection needs validation shots; use ", Opt("select", "last"), " or more shots")
        if select == "test" and (val is None or len(val) == 0):
            raise UsageError("selection on the test split needs test samples")
        if any(r.indices != train.indices for r in resamples):
            raise UsageError("the resampled feature sets must hold the same samples in the same order")
        # [R, N, V, D] per path; None for one set (then every epoch sees `train` as it is).
        self.resampled = None
        if len(resamples) > 1:
            self.resampled = (torch.stack([r.depth for r in resamples]), torch.stack([r.clip for r in resamples]))
        self.split_name = "test" if select == "test" else "val"
        self.adapter, self.train, self.val, self.run_dir = adapter, train, val, Path(run)
        self.epochs, self.batch_size, self.lr, self.weight_decay = epochs, batch_size, lr, weight_decay
        self.seed, self.select, self.resume, self.save_every = seed, select, resume, save_every
        self.on_event, self.refresh_features = on_event, refresh_features
        self.device = next(adapter.parameters()).device
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.start = 0
        self.best: dict = {"epoch": 0, f"{self.split_name}_acc": -1.0, f"{self.split_name}_loss": math.inf}
        self.history: list[dict] = []
        self.last: dict = {}

    def run(self) -> TrainResult:
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            self.setup()
            for epoch in range(self.start + 1, self.epochs + 1):
                t0 = time.perf_counter()
                row = self.epoch(epoch)
                self.end_epoch(row, t0)
        return self.finish()

    def setup(self) -> None:
        """The optimiser and shuffling generator, restored from the run's state when resuming."""
        self.opt = torch.optim.AdamW(self.adapter.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        self.gen = torch.Generator().manual_seed(self.seed)
        if self.resume:
            self.start, self.best = _load_state(self.run_dir, self.adapter, self.opt, self.gen, self.device,
                                                None if self.select == "last" else self.split_name)
        # Epochs after the last saved state (a run killed mid-save) are dropped: they will be redone.
        self.history = truncate_metrics(self.metrics_path, "epoch", self.start)

    def epoch(self, epoch: int) -> dict:
        """One shuffled pass over the training features; returns the epoch's metrics row so far."""
        if self.refresh_features is not None:
            self.train, self.val = self.refresh_features()
        adapter, opt, device, train = self.adapter, self.opt, self.device, self.epoch_features(epoch)
        adapter.train()
        total, correct, loss_sum = 0, 0, 0.0
        for idx in _batches(len(train), self.batch_size, self.gen):
            f1, f2 = train.depth[idx].to(device), train.clip[idx].to(device)
            y = train.targets[idx].to(device)
            logits = adapter(f1, f2)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(-1) == y).sum())
            total += len(idx)
        return {"epoch": epoch, "loss": loss_sum / total, "train_acc": correct / total, "lr": opt.param_groups[0]["lr"]}

    def epoch_features(self, epoch: int) -> FeatureSet:
        """The training features of an epoch: with R resampled sets, each sample's draw for this epoch."""
        if self.resampled is None:
            return self.train
        depth, clip = self.resampled
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        pick = torch.randint(depth.shape[0], (depth.shape[1],), generator=g)
        rows = torch.arange(depth.shape[1])
        t = self.train
        return FeatureSet(depth[pick, rows], clip[pick, rows], t.targets, t.indices, t.sample_ids, t.skipped)

    def end_epoch(self, row: dict, t0: float) -> None:
        """Validation, selection (best.safetensors), checkpoints, the metrics line and the event."""
        epoch = row["epoch"]
        acc_key, loss_key = f"{self.split_name}_acc", f"{self.split_name}_loss"
        if self.val is not None and len(self.val):
            row[loss_key], row[acc_key], _ = evaluate_features(self.adapter, self.val)
        if self.select == "test":
            row["selection"] = SELECTION_NOTES["test"]
        best = self.best
        if self.select == "last":
            improved = True
        elif self.select == "test":  # fewshot.py: `if test_acc > max_test_acc` (the first best epoch)
            improved = row[acc_key] > best[acc_key]
        else:
            improved = row[acc_key] > best[acc_key] or (row[acc_key] == best[acc_key] and row[loss_key] < best[loss_key])
        weights = adapter_tensors(self.adapter)
        checkpoint = epoch % self.save_every == 0 or epoch == self.epochs
        if checkpoint:
            save_tensors(self.run_dir / "last.safetensors", weights, metadata={"epoch": str(epoch)})
        if improved:
            self.best = {"epoch": epoch, acc_key: row.get(acc_key, -1.0), loss_key: row.get(loss_key, math.inf)}
            save_tensors(self.run_dir / "best.safetensors", weights, metadata={"epoch": str(epoch)})
        row["best"] = improved
        row["time_s"] = round(time.perf_counter() - t0, 4)
        self.history.append(row)
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if checkpoint:
            _save_state(self.run_dir, self.adapter, self.opt, self.gen, epoch, self.best, self.device)
        self.last = row
        emit(self.on_event, "epoch", epoch, self.epochs, **row)

    def finish(self) -> TrainResult:
        last = self.last or (self.history[-1] if self.history else {})
        return TrainResult(epochs=self.epochs, best=self.best, last=last, history=self.history)


def train_adapter(
    adapter: torch.nn.Module,
    train: FeatureSet | Sequence[FeatureSet],
    val: FeatureSet | None,
    run: str | Path,
    **options,
) -> TrainResult:
    """Train `adapter` (a DualPathAdapter) on cached features with AdamW; write checkpoints to `run`.

    `train`: one FeatureSet or R resampled ones (see `AdapterTrainer`); `val`: the selection set.

    After every epoch: a metrics.jsonl line and best.safetensors when the selection metric improved;
    every `save_every` epochs and after the last one: last.safetensors and the resume state.
    `resume=True` continues from state.json (the last saved epoch; later metrics lines are redone).
    `refresh_features` (benchmark baseline) is called before every epoch to recompute the features.
    `on_event` gets an "epoch" Event (done / total: epochs; the metrics line) after each epoch is saved. `options` are
    AdapterTrainer's keyword arguments (epochs, batch_size, lr, weight_decay, seed, select, resume,
    save_every, on_event, refresh_features), which it checks and documents.
    """
    return AdapterTrainer(adapter, train, val, run, **options).run()
