"""clip2point.distributed.process_group: ranks that finish wait for each other before the group is
destroyed; a rank that fails tears down at once (its peers may never reach a barrier)."""

from __future__ import annotations

import pytest
import torch

from clip2point import distributed


def _record(monkeypatch) -> list[str]:
    calls: list[str] = []
    ctx = distributed.DistContext()
    monkeypatch.setattr(distributed, "setup", lambda device: calls.append("setup") or ctx)
    monkeypatch.setattr(distributed, "barrier", lambda c: calls.append("barrier"))
    monkeypatch.setattr(distributed, "teardown", lambda c: calls.append("teardown"))
    return calls


def test_a_block_that_ends_waits_for_every_rank_then_tears_down(monkeypatch):
    calls = _record(monkeypatch)
    with distributed.process_group(torch.device("cpu")):
        calls.append("work")
    assert calls == ["setup", "work", "barrier", "teardown"]


def test_a_block_that_raises_tears_down_without_a_barrier(monkeypatch):
    calls = _record(monkeypatch)
    with pytest.raises(KeyboardInterrupt), distributed.process_group(torch.device("cpu")):
        raise KeyboardInterrupt
    assert calls == ["setup", "teardown"]
