"""The one progress-bar layout of the CLI (library code reports progress through callbacks)."""

from __future__ import annotations


def progress_bar(console, label: str = "{task.description}", *, info: bool = False, eta: bool = True,
                 disable: bool = False, transient: bool = False):
    """A rich Progress: label, bar, done/total, optional `info` field, elapsed and (with `eta`) remaining time.

    With `info=True` every task must be added with an `info=` field (e.g. "loss 0.31 acc 0.88").
    """
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
