"""The one way long runs (classify, eval, few-shot, pre-training, export) tell a display what they do.

Every run takes `on_event: EventHook | None` and calls it with an `Event`; library code never
prints. A display reads `kind` and the counters it knows and ignores the rest, so a run may add
kinds or fields without breaking any display.

Standard library only: the CLI's progress bars and the torch-free ONNX runner use it too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    """Something a run did. `done` / `total` count the units of the current stage (files, samples,
    batches, epochs) when it counts anything; `data` holds the rest by name (metrics, a result, a
    stage name)."""

    kind: str
    done: int | None = None
    total: int | None = None
    data: Mapping[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)


EventHook = Callable[[Event], None]


def emit(hook: EventHook | None, kind: str, done: int | None = None, total: int | None = None, **data: Any) -> None:
    """Call `hook` with an Event, when there is a hook."""
    if hook is not None:
        hook(Event(kind, done, total, data))
