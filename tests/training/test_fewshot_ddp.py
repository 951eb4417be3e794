"""`c2p fewshot` under torchrun: two CPU processes (gloo) share the feature work and rank 0 writes
the run a single process writes.

Checks: after a fresh run and after `--resume`, the run folder of 2 ranks holds byte-identical
best / last weights and the same config, shots, metrics and summary (times aside) as one process;
the feature cache rank 0 wrote holds the single process's features; and each rank read and encoded
only its share (logged per rank by a wrapper around the library, so the test fails if both ranks do
all the work or if one does none).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tests.pretrain_helpers import one_thread
from tests.torchrun_helpers import run_logged_ranks

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--model", "c2p-tiny", "--pretrained", "none"]

# `c2p` that logs, per rank, the samples it read and the clouds it encoded for features.
LOGGING_CLI = """
import json, os, sys
from pathlib import Path

log = Path(sys.argv.pop(1)) / ("rank" + os.environ.get("RANK", "0") + ".jsonl")
import clip2point.training.features as f

read_samples, encode_clouds = f.read_samples, f.encode_clouds


def logged_read_samples(dataset, indices):
    indices = list(indices)
    with open(log, "a") as fh:
        fh.write(json.dumps({"read": [dataset.sample_ids[i] for i in indices]}) + "\\n")
    return read_samples(dataset, indices)


def logged_encode_clouds(encoders, clouds, *args):
    with open(log, "a") as fh:
        fh.write(json.dumps({"encoded": len(clouds)}) + "\\n")
    return encode_clouds(encoders, clouds, *args)


f.read_samples, f.encode_clouds = logged_read_samples, logged_encode_clouds
from clip2point.app import main

sys.argv = ["c2p"] + sys.argv[1:]
main()
"""


def _torchrun(tmp_path: Path, args: list[str], env: dict) -> list[dict]:
    """Run `c2p ARGS` on 2 gloo ranks; per rank: the sample ids it read and the clouds it encoded."""
    r, logs = run_logged_ranks(tmp_path, LOGGING_CLI, args, env)
    assert r.returncode == 0, r.stderr[-3000:]
    out = []
    for rank in (0, 1):
        path = logs / f"rank{rank}.jsonl"
        rows = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
        out.append({"read": [s for row in rows for s in row.get("read", [])],
                    "encoded": sum(row.get("encoded", 0) for row in rows)})
    return out


def _without_times(obj):
    if isinstance(obj, dict):
        return {k: _without_times(v) for k, v in obj.items() if k not in ("time_s", "feature_time_s", "run")}
    if isinstance(obj, list):
        return [_without_times(v) for v in obj]
    return obj


def _same_run(one: Path, two: Path) -> None:
    for name in ("best.safetensors", "last.safetensors"):
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    for name in ("config.json", "shots.json"):
        assert json.loads((one / name).read_text()) == json.loads((two / name).read_text()), name
    metrics = [[_without_times(json.loads(x)) for x in (d / "metrics.jsonl").read_text().splitlines()] for d in (one, two)]
    assert metrics[0] == metrics[1] and len(metrics[0]) >= 2
    summaries = [_without_times(json.loads((d / "summary.json").read_text())) for d in (one, two)]
    assert summaries[0] == summaries[1]


def _check_shares(ranks: list[dict], everything: set[str], reads: tuple[int, int], encoded: int) -> None:
    """Each rank read whole batches of its own (none of the other's samples), together every
    sample of every feature set once, and encoded what it read."""
    read0, read1 = set(ranks[0]["read"]), set(ranks[1]["read"])
    assert read0.isdisjoint(read1) and read0 | read1 == everything
    assert (len(ranks[0]["read"]), len(ranks[1]["read"])) == reads
    assert ranks[0]["encoded"] > 0 and ranks[1]["encoded"] > 0
    assert ranks[0]["encoded"] + ranks[1]["encoded"] == encoded


@pytest.mark.slow
def test_two_gloo_ranks_write_the_single_process_run_and_split_the_feature_work(tmp_path, monkeypatch):
    from clip2point.store.checkpoints import load_tensors
    from clip2point.synth import write_dataset
    from clip2point.training.fewshot import FewShotOptions, run_fewshot

    data = tmp_path / "data"
    write_dataset(data, classes=["cube", "torus", "sphere"], per_class=4, test_per_class=2, fmt="npy", n_points=256, seed=4)
    (data / "train" / "cube" / "cube_0005.npy").write_bytes(b"not numpy")  # a shot drawn, unreadable, replaced
    (data / "test" / "torus" / "torus_0003.npy").write_bytes(b"not numpy")  # skipped in the test report
    cache = tmp_path / "cache"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "C2P_CACHE_DIR": str(cache)}
    monkeypatch.setenv("C2P_CACHE_DIR", str(cache))
    # 12 shots, their 12 resampled point sets and 7 test files, in batches of 4: 3 + 3 + 2 batches to share
    flags = [*TINY, "--device", "cpu", "--points", "128", "-k", "4", "--resamples", "2", "--feature-batch-size", "4", "-q"]

    def single(out: Path, epochs: int, resume: bool = False, **kw) -> None:
        opts = FewShotOptions(shots=4, epochs=epochs, model="c2p-tiny", pretrained="none", device="cpu", n_points=128,
                              resamples=2, feature_batch_size=4, **kw)
        with one_thread():
            run_fewshot(data, out, opts, resume=resume)

    def everything(run: Path) -> set[str]:
        shots = json.loads((run / "shots.json").read_text())["train"]
        tests = {str(p.relative_to(data)) for p in (data / "test").rglob("*.npy")}
        return {sid for ids in shots.values() for sid in ids} | tests

    # A fresh run: the ranks compute every feature set together; rank 0 writes the cache.
    single(tmp_path / "one", 2, cache_dir=str(tmp_path / "features-one"))
    ranks = _torchrun(tmp_path, ["fewshot", str(data), "-o", str(tmp_path / "two"), "--epochs", "2",
                                 "--cache-dir", str(tmp_path / "features-two"), *flags], env)
    _same_run(tmp_path / "one", tmp_path / "two")
    # rank 0: batches 1 and 3 of the shots and of their resampled sets, batch 1 of the test split;
    # rank 1: batch 2 of each, and batch 2 (3 files) of the test split. 6 of the 7 test files read.
    _check_shares(ranks, everything(tmp_path / "two"), (8 + 8 + 4, 4 + 4 + 3), 12 + 12 + 6)
    files = sorted(p.name for p in (tmp_path / "features-two").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "features-one").iterdir()) and len(files) == 3
    for name in files:
        a, b = load_tensors(tmp_path / "features-one" / name), load_tensors(tmp_path / "features-two" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # --resume without the cache: the ranks compute the features again, rank 0 continues the training.
    single(tmp_path / "one", 3, resume=True, use_cache=False)
    ranks = _torchrun(tmp_path, ["fewshot", str(data), "-o", str(tmp_path / "two"), "--epochs", "3", "--resume",
                                 "--no-cache", *flags], env)
    _same_run(tmp_path / "one", tmp_path / "two")
    _check_shares(ranks, everything(tmp_path / "two"), (8 + 8 + 4, 4 + 4 + 3), 12 + 12 + 6)
