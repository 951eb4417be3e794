"""Few-shot training of the (Gated) Dual-Path Adapter, with checkpoints, resume and evaluation.

A run folder holds:
    config.json          what the run was made with (labels, prompts, views, models, weights ids,
                         depth encoder + sha256, fusion, shots, seed, optimiser, project version)
    shots.json           the sampled k shots per class (sample ids of readable files: a drawn file
                         that fails to read is replaced from its class), training and validation
                         parts; --resume trains on exactly these (it never re-samples)
    metrics.jsonl        one line per epoch: loss, train / val (or test) accuracy, lr, time
    best.safetensors     adapter weights of the selected epoch: the last one (`select="last"`, the
                         default), the best validation accuracy (`"val"`, ties to the lower
                         validation loss), or the best TEST accuracy (`"test"`, the paper's protocol)
    last.safetensors     adapter weights after the last completed epoch
    state.safetensors    optimiser moments, RNG states (tensors, no pickle) ...
    state.json           ... and the epoch, best-so-far and optimiser hyper-parameters, for --resume
    summary.json         final numbers (written at the end)

The head is the official one (see `clip2point.models.adapters`): raw per-view features, logits = the
normalised fused feature . text^T with scale 1 in the loss. As the official fewshot.py, all k
shots train and the last epoch is kept by default (`select="last"`); `select="val"` holds out part
of each class's shots and keeps the best validation epoch. `select="test"` is the paper's
protocol, keeping the epoch with the best test accuracy: every output of such a run says so
(`SELECTION_NOTES`), since choosing on the test split is optimistic. Otherwise the test accuracy
in summary.json is computed after training, for information only.

Per-epoch resampling (`resamples=R`): the official loader samples new surface points every time a
shape is read. The encoders are frozen, so instead the features of R resampled point sets of every
training shot are computed once (and cached), and each epoch every shot draws one of its R sets
(seeded by (seed, epoch), so resume sees the same draws). R=1 trains on one fixed set.

Under torchrun (`ctx`, see `clip2point.distributed`) the ranks share the feature work: rank 0
samples (or, resuming, reads) the shots and sends their ids to every rank; each rank renders and
encodes its share of the batches of the shots, of their resampled sets and of the test split on its
own device (`clip2point.training.features`); rank 0 gathers them in the order one process computes
them, then trains the adapter and writes every file alone (training on cached features takes
seconds; the other ranks are done once the features are). So a run on W ranks writes the same run
folder as one process: bit-identical weights on CPU. The test split's features are therefore
computed with the others, before training, in every run.

Training is deterministic for a seed on CPU, and a resumed
run ends bit-identical to an uninterrupted one: the state saved after each epoch holds everything
the next epoch consumes (weights, AdamW moments and step, torch's RNG for dropout, the shuffling
generator).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from clip2point import defaults, option_table
from clip2point.distributed import DistContext, broadcast_object
from clip2point.errors import CheckpointError, DatasetError, Opt, OptionError, UsageError
from clip2point.evaluate import accuracy_report
from clip2point.store.checkpoints import (
    load_optimizer_state,
    load_tensors,
    optimizer_state,
    read_json,
    save_tensors,
    write_json,
)

from .features import FeatureSet

if TYPE_CHECKING:
    from .datasets import ShotSplit

SELECTIONS = option_table.choices("select")
# Said wherever the results of a selection are shown (config.json, summary.json, the CLI, reports).
SELECTION_NOTES = {"test": "the paper's protocol: epoch chosen on the test split (optimistic)"}
MAX_RESAMPLES = 1000
EventCallback = Callable[..., None]


@dataclass
class FewShotOptions:
    """Everything `c2p fewshot` can be told; the defaults are the paper's."""

    shots: int = 16
    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    fusion: str = "gated"
    select: str = "last"
    val_fraction: float = 0.25  # with select="val": the part of each class's shots held out
    resamples: int = 1
    model: str = defaults.MODEL
    pretrained: str = defaults.PRETRAINED
    depth_encoder: str | None = None
    views: int = defaults.FEW_SHOT_VIEWS
    n_points: int = defaults.NUM_POINTS
    sampling: str | None = None
    up: str | None = None
    dataset_kind: str = "auto"
    variant: str | None = None  # ScanObjectNN: obj_bg, obj_only, pb_t50_rs
    templates: list[str] | None = None
    device: str = "auto"
    feature_batch_size: int = 32
    cache_dir: str | None = None  # None: paths.cache_dir("features")
    use_cache: bool = True
    render_backend: str = "auto"
    save_every: int = 1  # epochs between last.safetensors / resume-state writes
    radius: float = defaults.POINT_RADIUS
    fold: bool = True
    eval_test: bool = True
    # Benchmark baseline only: render and encode the shots again every epoch, as the reference code does.
    recompute_features_every_epoch: bool = False

    def check(self) -> None:
        from clip2point.models.adapters import FUSIONS

        if self.fusion not in FUSIONS:
            raise OptionError(Opt("fusion"), f" must be one of {', '.join(FUSIONS)}, got {self.fusion!r}")
        if self.select not in SELECTIONS:
            raise OptionError(Opt("select"), f" must be one of {', '.join(SELECTIONS)}, got {self.select!r}")
        if not 1 <= self.resamples <= MAX_RESAMPLES:
            raise OptionError(Opt("resamples"), f" must be between 1 and {MAX_RESAMPLES}, got {self.resamples}")
        for name in ("shots", "epochs", "batch_size", "feature_batch_size", "save_every"):
            if getattr(self, name) < 1:
                raise OptionError(Opt(name), f" must be at least 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            # batch norm in the adapter cannot train on batches of one sample
            raise OptionError(Opt("batch_size"), f" must be at least 2, got {self.batch_size}")
        if not self.lr > 0 or self.weight_decay < 0:
            raise OptionError(Opt("lr"), " must be positive and ", Opt("weight_decay"), " not negative")


# Options that must match for --resume to continue a run (the number of epochs may grow). The
# encoders are compared by what they are, not by how they were named: `weights_id` (CLIP weights),
# `depth_encoder_sha256` and `encoder_ids` of config.json (see RESUME_IDENTITY).
RESUME_KEYS = (
    "shots", "batch_size", "lr", "weight_decay", "seed", "fusion", "select", "val_fraction", "model",
    "views", "n_points", "sampling", "up", "templates", "radius", "fold", "dataset_kind", "variant", "resamples",
)
# What a run recorded before an option existed meant.
RESUME_DEFAULTS = {"resamples": 1}
RESUME_IDENTITY = {
    "weights_id": "CLIP weights (pretrained)",
    "depth_encoder_sha256": "depth encoder file (depth_encoder)",
    "encoder_ids": "encoder ids",
}
# Recorded in config.json "options" for information; paths may differ on resume.
RECORDED_KEYS = (*RESUME_KEYS, "epochs", "pretrained", "depth_encoder")


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Checkpoint state (no pickle: tensors in safetensors, the rest in JSON)
# ---------------------------------------------------------------------------------------------


def adapter_tensors(adapter: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's state dict as a flat dict of tensors (what best / last.safetensors hold)."""
    return {k: v for k, v in adapter.state_dict().items()}


def _save_state(run: Path, adapter, opt, gen: torch.Generator, epoch: int, best: dict, device: torch.device) -> None:
    opt_tensors, opt_meta = optimizer_state(opt)
    tensors = {f"adapter.{k}": v for k, v in adapter_tensors(adapter).items()}
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.shuffle"] = gen.get_state()
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    save_tensors(run / "state.safetensors", tensors)
    write_json(run / "state.json", {"epoch": epoch, "best": best, "optimizer": opt_meta})


def _load_state(run: Path, adapter, opt, gen: torch.Generator, device: torch.device,
                split: str | None = None) -> tuple[int, dict]:
    """(epoch, best) of the run's resume state, loaded into the adapter, optimiser and RNGs after
    checking every field it uses (`clip2point.store.run_files`; `split`: the selection set's name)."""
    from clip2point.store.run_files import FEWSHOT_STATE, check_fewshot_best, check_fields, check_rng_tensors

    meta = read_json(run / "state.json")
    check_fields(run / "state.json", meta, FEWSHOT_STATE)
    if split is not None:
        check_fewshot_best(meta["best"], run / "state.json", split)
    tensors = load_tensors(run / "state.safetensors")
    check_rng_tensors(tensors, run / "state.safetensors", ["rng.torch", "rng.shuffle", "rng.cuda"])
    try:
        adapter.load_state_dict({k[len("adapter."):]: v for k, v in tensors.items() if k.startswith("adapter.")})
        load_optimizer_state(opt, tensors, meta["optimizer"])
        torch.set_rng_state(tensors["rng.torch"])
        gen.set_state(tensors["rng.shuffle"])
        if device.type == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"], device)
    except (KeyError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"{run / 'state.safetensors'}: cannot resume from it ({str(e).splitlines()[0]})") from e
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
        on_event: EventCallback | None = None,
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
        self.history = _read_metrics(self.metrics_path, upto=self.start)
        _write_metrics(self.metrics_path, self.history)

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
        if self.on_event is not None:
            self.on_event("epoch", metrics=row, epochs=self.epochs)

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
    `on_event("epoch", metrics=...)` is called after each epoch is saved. `options` are
    AdapterTrainer's keyword arguments (epochs, batch_size, lr, weight_decay, seed, select, resume,
    save_every, on_event, refresh_features), which it checks and documents.
    """
    return AdapterTrainer(adapter, train, val, run, **options).run()


def _read_metrics(path: Path, upto: int) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            if row.get("epoch", 0) <= upto:
                rows.append(row)
    return rows


def _write_metrics(path: Path, rows: list[dict]) -> None:
    # Epochs after the last saved state (a run killed mid-save) are dropped: they will be redone.
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


# ---------------------------------------------------------------------------------------------
# The whole command: datasets -> shots -> encoders -> features -> training -> test evaluation
# ---------------------------------------------------------------------------------------------


def _shots_json(dataset, split, seed: int, shots: int) -> dict:
    def by_class(indices):
        out: dict[str, list[str]] = {lab: [] for lab in dataset.labels}
        for i in indices:
            out[dataset.labels[dataset.targets[i]]].append(dataset.sample_ids[i])
        return out

    return {"seed": seed, "shots": shots, "train": by_class(split.train), "val": by_class(split.val),
            "short_classes": split.short_classes}


def _load_shots(run: Path, dataset) -> ShotSplit:
    """The shots a run was started with (its shots.json), as indices into `dataset`.

    Resuming must train on the same samples: re-sampling would move shots between training and
    validation as soon as a file was added. A listed shot that is gone (or changed class) refuses.
    """
    from clip2point.store.run_files import FEWSHOT_SHOTS, check_fields

    path = run / "shots.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; cannot resume without the run's shots")
    saved = read_json(path)
    check_fields(path, saved, FEWSHOT_SHOTS)
    return _split_from_ids(saved, dataset, lambda sid, problem: CheckpointError(
        f"{path}: shot {sid!r} {problem}; cannot resume with the run's shots"))


def _split_from_ids(saved: dict, dataset, error: Callable[[str, str], Exception]) -> ShotSplit:
    """A shots.json-style dict ({"train"|"val": {label: [sample id]}, "short_classes"}) as indices
    into `dataset`; `error(sid, problem)` is raised for a shot that is not there or changed class."""
    from .datasets import ShotSplit

    index = {sid: i for i, sid in enumerate(dataset.sample_ids)}
    parts: dict[str, list[int]] = {}
    for part in ("train", "val"):
        parts[part] = []
        for label, ids in saved.get(part, {}).items():
            for sid in ids:
                i = index.get(sid)
                if i is None:
                    raise error(sid, "is no longer in the dataset")
                if dataset.labels[dataset.targets[i]] != label:
                    raise error(sid, f"is now class {dataset.labels[dataset.targets[i]]!r}, not {label!r}")
                parts[part].append(i)
    return ShotSplit(sorted(parts["train"]), sorted(parts["val"]), dict(saved.get("short_classes", {})))


class _Preloaded:
    """A dataset view that hands out samples already read (once each) before reading the files again."""

    def __init__(self, dataset, loaded: dict[int, tuple]):
        self._dataset, self._loaded = dataset, loaded

    def __len__(self) -> int:
        return len(self._dataset)

    def __getitem__(self, i: int):
        return self._loaded.pop(i) if i in self._loaded else self._dataset[i]

    def __getattr__(self, name: str):
        return getattr(self._dataset, name)


def _sample_readable_shots(dataset, opts: FewShotOptions) -> tuple[ShotSplit, list[dict], _Preloaded]:
    """Seeded shots of which every one reads; a drawn file that fails is replaced by the class's
    next member (deterministically) and listed as {"id", "error"}. The returned view of `dataset`
    serves the shots read for this check, so feature computation does not read them again."""
    from clip2point.errors import InputFileError

    from .datasets import sample_shots

    unreadable: list[dict] = []
    loaded: dict[int, tuple] = {}

    def reads(i: int) -> bool:
        try:
            loaded[i] = dataset[i]
        except InputFileError as e:
            unreadable.append({"id": dataset.sample_ids[i], "error": str(e)})
            return False
        return True

    split = sample_shots(dataset.targets, dataset.labels, opts.shots, opts.seed,
                         opts.val_fraction if opts.select == "val" else 0.0, usable=reads)
    return split, unreadable, _Preloaded(dataset, loaded)


def _shot_counts(labels: Sequence[str], train: FeatureSet, val: FeatureSet | None) -> dict[str, dict[str, int]]:
    """Per class: how many training and validation shots the adapter really got (readable ones)."""
    def count(feats: FeatureSet | None) -> list[int]:
        if feats is None or not len(feats):
            return [0] * len(labels)
        return torch.bincount(feats.targets, minlength=len(labels)).tolist()

    return {lab: {"train": t, "val": v} for lab, t, v in zip(labels, count(train), count(val), strict=True)}


def _encoder_ids(bundle, depth_encoder: str | None) -> tuple[dict, str | None]:
    from clip2point.models.encoders import sha256_file

    sha = sha256_file(depth_encoder) if depth_encoder else None
    return {"clip": bundle.weights_id, "depth": f"sha256:{sha}" if sha else bundle.weights_id}, sha


class FewShotRun:
    """One `c2p fewshot` run, in named stages (the public entry point is `run_fewshot`).

    `run()` = `setup()` (options, run folder, dataset, models, config.json, shots), `features()`
    (both paths' per-view features of the shots, of their R resampled point sets, and of the test
    split when it is reported or selects the epoch; all cached), `train()` (the epochs, see
    `AdapterTrainer`: epoch / end of epoch), `finish()` (test report, summary.json).
    Events for progress displays: on_event("stage", name=...), ("features", done=, total=, name=),
    ("epoch", metrics=, epochs=); under torchrun (`ctx`) rank 0 alone sends them, and its
    "features" events count its own share. On ranks other than 0 `run()` ends after `features()`
    and returns None (see the module's docstring).
    """

    def __init__(self, data: str | Path, out: str | Path, opts: FewShotOptions, resume: bool = False,
                 on_event: EventCallback | None = None, ctx: DistContext | None = None):
        self.data, self.run_dir, self.opts, self.resume, self.on_event = data, Path(out), opts, resume, on_event
        self.ctx = ctx or DistContext()
        self.warnings: list[str] = []
        self.unreadable: list[dict] = []

    def emit(self, kind: str, **info) -> None:
        if self.on_event is not None and self.ctx.is_main:
            self.on_event(kind, **info)

    def run(self) -> dict | None:
        self.t_start = time.perf_counter()
        self.setup()
        self.features()
        if not self.ctx.is_main:
            return None  # rank 0 trains and writes the run alone
        self.train()
        return self.finish()

    # -- setup ------------------------------------------------------------------------------------

    def setup(self) -> None:
        """Check options and the run folder (before anything slow), read the dataset, build the
        models, write config.json and the shots."""
        from clip2point.distributed import resolve_device
        from clip2point.models import prompts
        from clip2point.models.adapters import build_adapter_classifier
        from clip2point.models.encoders import load_clip
        from clip2point.views import view_preset

        from .datasets import open_dataset
        from .features import RenderSettings

        opts, run, main = self.opts, self.run_dir, self.ctx.is_main
        opts.check()
        if opts.depth_encoder:
            from clip2point.models.encoders import resolve_depth_encoder

            # a `c2p pretrain` run folder stands for its depth_encoder.safetensors
            opts.depth_encoder = str(resolve_depth_encoder(opts.depth_encoder))
        # Only rank 0 touches the run folder (the others need not even see it).
        if main:
            self._check_run_folder()
        # A run stopped before its first epoch ended has a config but no state: it starts from epoch 0.
        self.has_state = main and (run / "state.json").is_file()
        self.device = self.ctx.device if self.ctx.distributed else resolve_device(opts.device)
        self.templates = prompts.resolve_templates(opts.templates)
        view_list = view_preset(opts.views)
        self.ds_kw = {"n_points": opts.n_points, "sampling": opts.sampling, "seed": opts.seed, "up": opts.up,
                      "variant": opts.variant}

        self.emit("stage", name="reading dataset")
        self.train_ds = open_dataset(self.data, opts.dataset_kind, "train", **self.ds_kw)
        self.labels = list(self.train_ds.labels)

        self.emit("stage", name="loading models")
        bundle = load_clip(opts.model, opts.pretrained, device="cpu")
        text = prompts.text_features(bundle, self.labels, self.templates).cpu()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(opts.seed)
            self.clf = build_adapter_classifier(bundle, self.labels, text, len(view_list), opts.fusion,
                                                opts.depth_encoder, opts.fold)
        self.clf.to(self.device)
        self.encoder_ids, depth_sha = _encoder_ids(bundle, opts.depth_encoder)
        if not opts.depth_encoder:
            self.warnings.append("no depth encoder: the depth path starts from CLIP's own visual weights (both paths see the same encoder)")
        self.settings = RenderSettings(view_list, self.clf.depth_encoder.image_size, opts.radius, self.clf.in_channels,
                                       opts.render_backend)
        self.shots_ds = self.train_ds
        shots = None
        if main:
            config = self._config(bundle, view_list, depth_sha)
            if self.resume and (run / "config.json").is_file():
                from clip2point.models.adapters import read_run_config

                self._check_resume(read_run_config(run), config)
            if self.resume:
                self.split = _load_shots(run, self.train_ds)
            else:
                self.emit("stage", name="sampling shots")
                self.split, self.unreadable, self.shots_ds = _sample_readable_shots(self.train_ds, opts)
            shots = _shots_json(self.train_ds, self.split, opts.seed, opts.shots)
            if not self.resume:
                # shots.json first: a config.json (what --resume looks for) always comes with its shots
                write_json(run / "shots.json", shots)
            write_json(run / "config.json", config)
        # Every rank trains nothing but encodes its share of rank 0's shots, named by sample id.
        shots = broadcast_object(self.ctx, shots)
        if not main:
            self.split = _split_from_ids(shots, self.train_ds, lambda sid, problem: DatasetError(
                f"rank {self.ctx.rank}: shot {sid!r} of rank 0 {problem} as this rank reads {self.data}"))

    def _check_run_folder(self) -> None:
        run, resume = self.run_dir, self.resume
        if run.exists() and not run.is_dir():
            raise OptionError(Opt("out"), f" {run} must be a run folder, but it is a file")
        if resume and not (run / "config.json").is_file():
            raise CheckpointError(f"{run}: nothing to resume (no config.json; start the run without resuming)")
        if not resume and (run / "state.json").exists():
            raise OptionError(f"{run} already holds a few-shot run; continue it with ", Opt("resume"), " or choose another ", Opt("out"))
        # Created before any model or data is loaded, so a bad --out fails in a second, not after training.
        try:
            run.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"{run}: cannot create the run folder ({e.strerror or e})") from e

    def _config(self, bundle, view_list, depth_sha: str | None) -> dict:
        from clip2point import __version__
        from clip2point.models.adapters import RUN_FORMAT

        opts, clf = self.opts, self.clf
        config = {
            "format": RUN_FORMAT, "version": __version__, "labels": self.labels, "templates": self.templates,
            "model": bundle.model_name, "pretrained": bundle.pretrained, "weights_id": bundle.weights_id,
            "depth_encoder": str(Path(opts.depth_encoder).resolve()) if opts.depth_encoder else None,
            "depth_encoder_sha256": depth_sha, "encoder_ids": self.encoder_ids, "fold": opts.fold,
            "fusion": opts.fusion, "dropout": clf.adapter.path1.dropout.p, "normalize_views": clf.adapter.normalize_views,
            "num_views": len(view_list), "views": [list(v) for v in view_list], "dim": clf.adapter.dim,
            # Training logits are z . t with scale 1 (the official loss); reported probabilities are
            # softmax(probability_scale * z . t). `logit_scale` is the same number (older readers).
            "loss_scale": 1.0, "probability_scale": float(clf.adapter.logit_scale),
            "logit_scale": float(clf.adapter.logit_scale), "image_size": self.settings.image_size, "radius": opts.radius,
            "selection": {"select": opts.select, "note": SELECTION_NOTES.get(opts.select)},
            "resamples": opts.resamples,
            "dataset": self.train_ds.describe(), "options": {k: v for k, v in asdict(opts).items() if k in RECORDED_KEYS},
            "warnings": self.warnings,
        }
        config["options"]["templates"] = self.templates
        return config

    def _check_resume(self, old: dict, config: dict) -> None:
        saved = {**RESUME_DEFAULTS, **old.get("options", {})}
        diffs = [k for k in RESUME_KEYS if saved.get(k) != config["options"].get(k)]
        for key, what in RESUME_IDENTITY.items():
            if old.get(key) != config[key] and not (key == "encoder_ids" and diffs):
                diffs.append(f"{what} ({old.get(key)} != {config[key]})")
        if old.get("labels") != self.labels:
            diffs.append("labels (the dataset's classes changed)")
        if diffs:
            raise UsageError(f"{self.run_dir}: cannot resume with different options: {', '.join(diffs)}")

    # -- features ---------------------------------------------------------------------------------

    def features(self) -> None:
        """Per-view features of every shot (and of R - 1 more point sets of each training shot, and of
        the test split when it selects the epoch), from the cache or rendered and encoded once."""
        from clip2point.store.paths import cache_dir as default_cache_dir

        from .datasets import resampled

        opts, main = self.opts, self.ctx.is_main
        self.emit("stage", name="features")
        self.cache = None
        if opts.use_cache:
            self.cache = Path(opts.cache_dir) if opts.cache_dir else default_cache_dir("features")
        t_feat = time.perf_counter()
        self.shot_feats, self.cache_hit = self._features(self.shots_ds, self.split.all, "shots")
        self.shots_ds = self.train_ds  # drop what the shot sampling read
        train_indices = None
        if main:
            self.train_feats = subset(self.shot_feats, self.split.train)
            self.val_feats = subset(self.shot_feats, self.split.val) if self.split.val else None
            train_indices = self.train_feats.indices
        # the readable training shots (rank 0 alone holds the features): what every resample encodes
        train_indices = broadcast_object(self.ctx, train_indices)
        sets = [self.train_feats] if main else []
        for r in range(1, opts.resamples):
            feats, _ = self._features(resampled(self.train_ds, r), train_indices, f"shots, resample {r + 1}")
            sets.append(feats)
        self.test_feats = None
        if opts.eval_test or opts.select == "test":
            # before training, so that every rank's share of the test split is encoded with the rest
            self.test_feats = self._test_features()
            if opts.select == "test" and isinstance(self.test_feats, dict):
                raise UsageError(f"selection on the test split: {self.test_feats['error']}")
        if not main:
            return
        self.train_sets = _common_samples(sets)
        self.train_feats = self.train_sets[0]
        self.feature_time = time.perf_counter() - t_feat
        unseen = [self.labels[c] for c in range(len(self.labels)) if not (self.train_feats.targets == c).any()]
        if unseen:
            self.warnings.append(f"no readable training shot for class(es) {', '.join(unseen)}: the adapter never sees them")

    def _features(self, dataset, indices, name: str) -> tuple[FeatureSet, bool]:
        from .features import cached_features

        clf = self.clf
        return cached_features(
            dataset, indices, clf.depth_encoder, clf.clip_encoder, self.settings, self.encoder_ids, self.cache,
            self.device, self.opts.feature_batch_size, lambda d, t: self.emit("features", done=d, total=t, name=name),
            self.ctx,
        )

    def _test_features(self) -> FeatureSet | dict | None:
        """Features of the whole test split, or {"error": why there are none} (the same on every
        rank); None on ranks other than 0."""
        from .datasets import open_dataset

        try:
            test_ds = open_dataset(self.data, self.opts.dataset_kind, "test", **self.ds_kw)
        except DatasetError as e:
            return {"error": str(e)}
        if list(test_ds.labels) != self.labels:
            return {"error": f"the test split's classes differ from the training split's ({len(test_ds.labels)} vs {len(self.labels)})"}
        self.emit("stage", name="test features")
        try:
            return self._features(test_ds, list(range(len(test_ds))), "test")[0]
        except DatasetError as e:  # no test sample could be read: the test report says so
            return {"error": str(e)}

    def _refresh(self) -> Callable[[], tuple[FeatureSet, FeatureSet | None]] | None:
        """Benchmark baseline: features rendered and encoded again before every epoch after the first."""
        if not self.opts.recompute_features_every_epoch:
            return None
        from .features import compute_features

        calls = [0]

        def refresh():
            # The first epoch uses the features computed above: one computation per epoch in all.
            calls[0] += 1
            if calls[0] == 1:
                return self.train_feats, self.val_feats
            fresh = compute_features(self.train_ds, self.split.all, self.clf.depth_encoder, self.clf.clip_encoder,
                                     self.settings, self.device, self.opts.feature_batch_size)
            return subset(fresh, self.split.train), (subset(fresh, self.split.val) if self.split.val else None)

        return refresh

    # -- epochs -----------------------------------------------------------------------------------

    def train(self) -> None:
        opts = self.opts
        self.emit("stage", name="training")
        selection_set = self.test_feats if opts.select == "test" else self.val_feats
        train = self.train_sets if len(self.train_sets) > 1 else self.train_feats
        self.result = AdapterTrainer(
            self.clf.adapter, train, selection_set, self.run_dir, epochs=opts.epochs,
            batch_size=opts.batch_size, lr=opts.lr, weight_decay=opts.weight_decay, seed=opts.seed, select=opts.select,
            resume=self.resume and self.has_state, save_every=opts.save_every, on_event=self.on_event,
            refresh_features=self._refresh(),
        ).run()

    # -- finish -----------------------------------------------------------------------------------

    def finish(self) -> dict:
        """The summary (and the test report, for information), written to summary.json."""
        opts, result, labels = self.opts, self.result, self.labels
        summary = {
            "run": str(self.run_dir), "labels": labels, "shots": opts.shots, "train_samples": len(self.train_feats),
            "val_samples": len(self.val_feats) if self.val_feats is not None else 0, "epochs": opts.epochs,
            "best_epoch": result.best["epoch"], "best_val_acc": result.best["val_acc"] if opts.select == "val" else None,
            "selection": {"select": opts.select, "note": SELECTION_NOTES.get(opts.select)},
            "resamples": len(self.train_sets),
            "shots_per_class": _shot_counts(labels, self.train_feats, self.val_feats),
            "last": result.last, "skipped": self.unreadable + self.shot_feats.skipped,
            "short_classes": self.split.short_classes, "feature_cache_hit": self.cache_hit,
            "feature_time_s": round(self.feature_time, 3), "warnings": self.warnings,
        }
        if opts.select == "test":
            summary["best_test_acc"] = result.best["test_acc"]
        if opts.eval_test or opts.select == "test":
            summary["test"] = self._evaluate_test()
        summary["time_s"] = round(time.perf_counter() - self.t_start, 3)
        write_json(self.run_dir / "summary.json", summary)
        return summary

    def _evaluate_test(self) -> dict | None:
        """Test accuracy of the best and last adapters (after training; for information, except
        with `select="test"`, whose best epoch was chosen on these very samples)."""
        feats = self.test_feats
        if isinstance(feats, dict):
            return feats
        opts, labels, clf = self.opts, self.labels, self.clf
        out: dict = {"n": len(feats), "skipped": feats.skipped}
        if SELECTION_NOTES.get(opts.select):
            out["selection"] = SELECTION_NOTES[opts.select]
        for which in ("best", "last"):
            state = load_tensors(self.run_dir / f"{which}.safetensors", device=self.device)
            clf.adapter.load_state_dict(state)
            _, acc, pred = evaluate_features(clf.adapter, feats)
            report = accuracy_report(feats.targets.tolist(), pred.tolist(), labels)
            out[which] = {"top1": acc, "mean_class_accuracy": report["mean_class_accuracy"],
                          "per_class": {k: v["accuracy"] for k, v in report["per_class"].items()}}
        return out


def _common_samples(sets: list[FeatureSet]) -> list[FeatureSet]:
    """The resampled feature sets restricted to the samples every one of them could read."""
    if len(sets) == 1:
        return sets
    common = set(sets[0].indices).intersection(*(s.indices for s in sets[1:]))
    if all(len(s) == len(common) for s in sets):
        return sets
    return [subset(s, sorted(common)) for s in sets]


def run_fewshot(
    data: str | Path,
    out: str | Path,
    opts: FewShotOptions,
    resume: bool = False,
    on_event: EventCallback | None = None,
    ctx: DistContext | None = None,
) -> dict | None:
    """Train an adapter on `opts.shots` samples per class of `data`'s train split; returns the summary.

    Events for progress displays: on_event("stage", name=...), ("features", done=, total=, name=),
    ("epoch", metrics=, epochs=). The stages are `FewShotRun`'s. Under torchrun pass the
    `clip2point.distributed.setup` context as `ctx`: the ranks share the feature work, each on
    `ctx.device`, and rank 0 trains, writes the run and returns the summary (the others None).
    """
    return FewShotRun(data, out, opts, resume, on_event, ctx).run()
