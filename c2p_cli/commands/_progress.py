"""The one progress layout of the CLI (library runs report through `clip2point.events`; the commands show their events here).

On a terminal it is a rich progress bar. When stderr is not a terminal (a log file, CI, a pipe,
`nohup`), a bar would only ever show its last frame, so the same calls print a plain progress line
instead: every `C2P_PROGRESS_INTERVAL` seconds (default 10; 0 prints on every update), when a task
finishes, and once more at the end, e.g.
    classifying: 288/3000 (9.6%) 41.2/s elapsed 0:00:07 eta 0:01:06
A line also goes out during long waits without an update, so CI jobs that kill silent processes
see c2p alive.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager

INTERVAL_ENV = "C2P_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 10.0


def progress_interval() -> float:
    """Seconds between progress lines when stderr is not a terminal ($C2P_PROGRESS_INTERVAL, default 10)."""
    try:
        value = float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL))
    except ValueError:
        return DEFAULT_INTERVAL
    return value if value >= 0 and value == value else DEFAULT_INTERVAL


def _live(console) -> bool:
    return bool(getattr(console, "is_terminal", False) or getattr(console, "is_jupyter", False))


def progress_bar(console, label: str = "{task.description}", *, info: bool = False, eta: bool = True,
                 disable: bool = False, transient: bool = False, interval: float | None = None):
    """A rich Progress on a terminal, else a `LineProgress` with the same methods (see the module docstring).

    Columns: label, bar, done/total, optional `info` field, elapsed and (with `eta`) remaining time.
    With `info=True` every task must be added with an `info=` field (e.g. "loss 0.31 acc 0.88").
    """
    if not disable and not _live(console):
        return LineProgress(console, label, info=info, eta=eta, interval=progress_interval() if interval is None else interval)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn(label), BarColumn(), MofNCompleteColumn()]
    if info:
        columns.append(TextColumn("{task.fields[info]}"))
    columns.append(TimeElapsedColumn())
    if eta:
        columns.append(TimeRemainingColumn())
    return Progress(*columns, console=console, disable=disable, transient=transient)


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class _Task:
    def __init__(self, task_id: int, description: str, total: float | None, completed: float, fields: dict):
        self.id = task_id
        self.description = description
        self.total = total
        self.completed = completed
        self.fields = fields
        self.started = time.monotonic()
        self.start_completed = completed
        self.finished_reported = False

    @property
    def finished(self) -> bool:
        return self.total is not None and self.completed >= self.total


class LineProgress:
    """rich.progress.Progress's methods used by the commands, printing progress lines instead of a bar."""

    def __init__(self, console, label: str = "{task.description}", *, info: bool = False, eta: bool = True,
                 interval: float = DEFAULT_INTERVAL):
        self.console = console
        self.label = label
        self.info = info
        self.eta = eta
        self.interval = float(interval)
        self.tasks_by_id: dict[int, _Task] = {}
        self._lock = threading.RLock()
        self._last_line = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- rich.progress.Progress API -----------------------------------------------------------

    @property
    def tasks(self) -> list[_Task]:
        return list(self.tasks_by_id.values())

    def start(self) -> None:
        if self.interval > 0 and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._tick, name="c2p-progress", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=1.0)
            self._thread = None
        with self._lock:
            if any(not t.finished_reported for t in self.tasks_by_id.values()):
                self._emit(only_unreported=True)

    def __enter__(self) -> LineProgress:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def add_task(self, description: str, start: bool = True, total: float | None = 100.0, completed: float = 0,
                 visible: bool = True, **fields) -> int:
        with self._lock:
            task_id = len(self.tasks_by_id)
            self.tasks_by_id[task_id] = _Task(task_id, description, total, completed, fields)
            return task_id

    def update(self, task_id: int, *, total: float | None = None, completed: float | None = None,
               advance: float | None = None, description: str | None = None, visible: bool | None = None,
               refresh: bool = False, **fields) -> None:
        with self._lock:
            task = self.tasks_by_id[task_id]
            if total is not None:
                task.total = total
            if completed is not None:
                task.completed = completed
            if advance is not None:
                task.completed += advance
            if description is not None:
                task.description = description
            task.fields.update(fields)
            self._maybe_emit(task)

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def refresh(self) -> None:
        pass

    # -- lines ------------------------------------------------------------------------------

    def line(self, task: _Task) -> str:
        """One task's progress as a plain line."""
        from rich.text import Text

        try:
            name = Text.from_markup(self.label.format(task=task)).plain
        except Exception:  # a label that is not a format string of a task
            name = task.description
        parts = [f"{name}:"]
        done = task.completed
        elapsed = time.monotonic() - task.started
        if task.total:
            parts.append(f"{done:g}/{task.total:g} ({100.0 * done / task.total:.1f}%)")
        else:
            parts.append(f"{done:g}")
        rate = (done - task.start_completed) / elapsed if elapsed > 0 else 0.0
        if rate > 0:
            parts.append(f"{rate:.1f}/s")
        parts.append(f"elapsed {_clock(elapsed)}")
        if self.eta and task.total and rate > 0 and not task.finished:
            parts.append(f"eta {_clock((task.total - done) / rate)}")
        if self.info and task.fields.get("info"):
            parts.append(str(task.fields["info"]))
        return " ".join(parts)

    def _print(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def _emit(self, only_unreported: bool = False) -> None:
        for task in self.tasks_by_id.values():
            if only_unreported and task.finished_reported:
                continue
            if task.finished:
                if task.finished_reported:
                    continue
                task.finished_reported = True
            self._print(self.line(task))
        self._last_line = time.monotonic()

    def _maybe_emit(self, task: _Task) -> None:
        if task.finished and not task.finished_reported:
            task.finished_reported = True
            self._print(self.line(task))
            self._last_line = time.monotonic()
        elif time.monotonic() - self._last_line >= self.interval:
            self._emit()

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                if time.monotonic() - self._last_line >= self.interval:
                    self._emit()


class _LineStatus:
    """console.status's update() for a non-terminal: each new message is printed once as a line."""

    def __init__(self, console, message: str):
        self.console = console
        self.update(message)

    def update(self, message: str) -> None:
        from rich.text import Text

        self.console.print(Text.from_markup(str(message)).plain, markup=False, highlight=False, soft_wrap=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def status(console, message: str):
    """A spinner with `message` on a terminal (console.status); elsewhere the message as a line."""
    if _live(console):
        return console.status(message, spinner="dots")
    return _LineStatus(console, message)


class EventDisplay:
    """A run's event hook that drives one progress task: counted events (`kinds`) move the bar, and each
    failed "result" is listed above it (also with the bar disabled: failures are never silent)."""

    def __init__(self, progress, task, kinds: tuple[str, ...]):
        self.progress, self.task, self.kinds = progress, task, kinds

    def __call__(self, event) -> None:
        if event.kind in self.kinds and event.done is not None:
            self.progress.update(self.task, completed=event.done)
        elif event.kind == "result":
            r = event.get("result")
            if r is not None and not r.ok:
                from rich.text import Text

                self.progress.console.print(Text.assemble(("failed ", "yellow"), r.error or r.path), soft_wrap=True, highlight=False)

    def stop(self) -> None:
        self.progress.stop()


@contextmanager
def event_display(console, label: str, *, total: int, kinds: tuple[str, ...] = ("classify",), disable: bool = False):
    """A progress bar (with its ETA) of `total` units, as an event hook for a run (see EventDisplay)."""
    with progress_bar(console, label, disable=disable) as progress:
        yield EventDisplay(progress, progress.add_task(label, total=total), kinds)
