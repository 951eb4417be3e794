"""Where zero-shot labels come from: a comma-separated value, a file with one label a line, or a set.

Guards against the classic slip of `labels="classes.txt"`: a one-class classifier that reports
probability 1.000 for every file. A labels value naming an existing file is refused (with a
pointer to `labels_file`), and fewer than two labels are refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import Opt, OptionError

MAX_LABELS_FILE_BYTES = 16 * 1024 * 1024


def read_labels_file(path: str | Path) -> list[str]:
    """One label a line; blank lines and lines starting with '#' are skipped."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_LABELS_FILE_BYTES:
            raise OptionError(Opt("labels_file"), f" {path}: {size} bytes is too large for a list of labels")
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise OptionError(Opt("labels_file"), f" {path}: cannot read it ({e.strerror or e})") from e
    except UnicodeDecodeError as e:
        raise OptionError(Opt("labels_file"), f" {path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    labels = [line.strip() for line in text.splitlines()]
    labels = [lab for lab in labels if lab and not lab.startswith("#")]
    if not labels:
        raise OptionError(Opt("labels_file"), f" {path}: holds no labels")
    return labels


def resolve_label_options(
    labels: str | Sequence[str] | None = None, labels_file: str | Path | None = None, label_set: str | None = None
) -> list[str] | None:
    """The labels to build a zero-shot classifier with, or None when none was given (an adapter or an
    exported engine brings its own). Refuses a labels value that is a file path, two sources at
    once, duplicates, and fewer than two labels."""
    from ..models.prompts import resolve_labels

    if labels_file is not None:
        if labels is not None:
            raise OptionError("give ", Opt("labels"), " or ", Opt("labels_file"), ", not both")
        labels = read_labels_file(labels_file)
    elif isinstance(labels, str) and "," not in labels and labels.strip() and Path(labels.strip()).is_file():
        raise OptionError(
            Opt("labels"), f" {labels!r} is a file, not a list of labels; to read one label a line from it, use ",
            Opt("labels_file"),
        )
    if labels is None and label_set is None:
        return None
    names = resolve_labels(labels, label_set)
    if len(names) < 2:
        raise OptionError(
            Opt("labels" if labels_file is None else "labels_file"),
            f" gives one label ({names[0]!r}); a classifier needs at least two (with one, every file gets probability 1.0)",
        )
    return names
