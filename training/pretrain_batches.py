"""Which samples each pre-training micro-batch holds: a seeded order per epoch, sharded over the
ranks, cut into batches, resumable mid-epoch, and grouped into optimiser steps."""

from __future__ import annotations

import math

import torch

from clip2point.errors import UsageError


class EpochBatches(torch.utils.data.Sampler):
    """Batches of indices for one rank: a seeded permutation per epoch, padded to a multiple of the
    world size (like DistributedSampler), sharded rank::world, cut into full batches.

    A shard smaller than one batch gives a single smaller batch (at least 2 samples needed).
    `start` skips the first batches (resuming mid-epoch).
    """

    def __init__(self, n: int, batch_size: int, *, world_size: int = 1, rank: int = 0, seed: int = 0):
        super().__init__()
        self.n, self.batch_size, self.world, self.rank, self.seed = n, batch_size, world_size, rank, seed
        self.per_rank = math.ceil(n / world_size)
        self.batch = min(batch_size, self.per_rank)
        if self.batch < 2:
            raise UsageError(
                f"{n} pairs over {world_size} process(es) leave fewer than 2 per batch (contrastive losses need negatives)"
            )
        self.batches_per_epoch = self.per_rank // self.batch
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = int(epoch), int(start)

    def epoch_indices(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        total = self.per_rank * self.world
        perm = (perm * math.ceil(total / self.n))[:total]
        return perm[self.rank::self.world]

    def __iter__(self):
        mine = self.epoch_indices()
        for b in range(self.start, self.batches_per_epoch):
            yield mine[b * self.batch:(b + 1) * self.batch]

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start


def micro_batches_in_step(b: int, batches: int, accumulate: int) -> int:
    """How many micro-batches the optimiser step holding batch `b` (of an epoch of `batches`) has.

    `accumulate`, except for the last step of an epoch, which holds what is left.
    """
    return min(accumulate, batches - (b // accumulate) * accumulate)


def collate(items: list[dict]) -> dict:
    """One micro-batch of `PretrainSamples` items as tensors (images only when they are not cached)."""
    out = {
        "index": torch.tensor([it["index"] for it in items]),
        "view": torch.tensor([it["view"] for it in items]),
        "points": torch.stack([it["points"] for it in items]),
        "distances": torch.stack([it["distances"] for it in items]),
    }
    if "image" in items[0]:
        out["image"] = torch.stack([it["image"] for it in items])
    return out
