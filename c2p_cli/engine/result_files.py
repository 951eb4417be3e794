"""Writing classification results for machines: JSON Lines, JSON or CSV, to a file or a stream.

Standard library only (besides clip2point.engine.batching), so the torch-free ONNX runner writes the same files.

- `write_results` writes a whole result set atomically (temporary name, then rename): a failed
  run never clobbers an earlier result file.
- `RowWriter` appends rows to an open text stream (JSON Lines or CSV) and flushes after each
  batch: what is written survives a crash or Ctrl-C. `c2p classify` streams to its output this way.
- `read_results` reads any of the three formats back (for `resume`), skipping a line cut short
  by a crash.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import C2PError, Opt, OptionError, UsageError
from .batching import FileResult

FORMATS = (".jsonl", ".json", ".csv")
# Names accepted for an explicit format; "table" is for people, on a terminal only.
FORMAT_NAMES = ("jsonl", "json", "csv", "table")
STDOUT = "-"


def format_of(path: str | Path | None, fmt: str | None = None) -> str:
    """The format results are written in: `fmt` when given, else the output file's extension."""
    if fmt is not None:
        name = str(fmt).lower().lstrip(".")
        if name not in FORMAT_NAMES:
            raise OptionError(Opt("format"), f" must be one of {', '.join(FORMAT_NAMES)}, got {fmt!r}")
        if name == "table" and path is not None and str(path) != STDOUT:
            raise OptionError(Opt("format", "table"), " is for the terminal; write files as jsonl, json or csv")
        return name
    if path is None or str(path) == STDOUT:
        return "jsonl"
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise OptionError(Opt("output"), f" {path}: unknown format '{suffix}' (use one of {', '.join(FORMATS)}, or give the format)")
    return suffix[1:]


def check_output_path(path: str | Path, fmt: str | None = None) -> str:
    """Fail before any work is done when the output cannot be written; return its format.

    Checks the format, creates missing parent folders, and writes (then removes) a test file
    beside the output, so a read-only folder or a parent that is a file is found now, not after
    hours of work.
    """
    path = Path(path)
    fmt = format_of(path, fmt)
    if path.is_dir():
        raise OptionError(Opt("output"), f" {path}: is a folder; give a file name such as {path / 'results.csv'}")
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OptionError(Opt("output"), f" {path}: cannot create the folder {parent} ({e.strerror or e})") from e
    if not parent.is_dir():
        raise OptionError(Opt("output"), f" {path}: {parent} is not a folder")
    probe = parent / f".{path.name}.{os.getpid()}.write-test"
    try:
        with open(probe, "wb") as fh:
            fh.write(b"c2p")
        probe.unlink()
        if path.exists():
            with open(path, "r+b"):
                pass
    except OSError as e:
        probe.unlink(missing_ok=True)
        raise OptionError(Opt("output"), f" {path}: cannot write there ({e.strerror or e})") from e
    return fmt


def csv_header(k: int) -> list[str]:
    header = ["path", "label", "probability", "n_points", "error", "size", "mtime"]
    for i in range(2, k + 1):
        header += [f"label_{i}", f"probability_{i}"]
    return header


def csv_row(r: FileResult, k: int) -> list:
    row = [r.path, r.label or "", "" if r.probability is None else f"{r.probability:.6f}", r.n_points or "", r.error or "",
           "" if r.size is None else r.size, "" if r.mtime is None else repr(r.mtime)]
    for i in range(1, k):
        row += [r.top_k[i][0], f"{r.top_k[i][1]:.6f}"] if i < len(r.top_k) else ["", ""]
    return row


def _csv_result(row: dict) -> FileResult:
    tops = []
    if row.get("label"):
        tops.append({"label": row["label"], "probability": row["probability"]})
    i = 2
    while f"label_{i}" in row:
        if row[f"label_{i}"]:
            tops.append({"label": row[f"label_{i}"], "probability": row[f"probability_{i}"]})
        i += 1
    return FileResult.from_dict({**row, "top_k": tops})


def render_results(results: Sequence[FileResult], suffix: str, meta: dict | None = None, k: int | None = None) -> str:
    """The whole text of a result file; `k` (CSV): label columns (default: the longest top-k)."""
    suffix = suffix.lower().lstrip(".")
    if suffix == "jsonl":
        return "".join(json.dumps(r.to_dict()) + "\n" for r in results)
    if suffix == "json":
        return json.dumps({"meta": meta or {}, "results": [r.to_dict() for r in results]}, indent=2) + "\n"
    if suffix == "csv":
        buf = io.StringIO()
        k = max((len(r.top_k) for r in results), default=0) if k is None else k
        w = csv.writer(buf)
        w.writerow(csv_header(k))
        for r in results:
            w.writerow(csv_row(r, k))
        return buf.getvalue()
    raise UsageError(f"unknown output format '{suffix}' (use one of {', '.join(FORMATS)})")


def write_results(path: str | Path, results: Sequence[FileResult], meta: dict | None = None, fmt: str | None = None) -> None:
    """Write every result at once, atomically (the format from `fmt` or the file's extension)."""
    from ..store.atomic import atomic_write_bytes

    path = Path(path)
    fmt = check_output_path(path, fmt)
    k = max((len(r.top_k) for r in results), default=0)
    try:
        atomic_write_bytes(path, render_results(results, fmt, meta, k).encode())
    except OSError as e:
        raise C2PError(f"{path}: cannot write the results ({e.strerror or e})") from e


class RowWriter:
    """Appends results to an open text stream as JSON Lines or CSV, one flush per `write` call.

    `k`: label columns of a CSV (fixed up front, since rows are written as they come); `header`:
    write the CSV header first (not when appending to a file that has one).
    """

    def __init__(self, stream, fmt: str, k: int = 1, header: bool = True):
        if fmt not in ("jsonl", "csv"):
            raise UsageError(f"results can be streamed as jsonl or csv, not {fmt}")
        self.stream, self.fmt, self.k = stream, fmt, max(int(k), 1)
        self._csv = csv.writer(stream) if fmt == "csv" else None
        if self._csv is not None and header:
            self._csv.writerow(csv_header(self.k))
            self.flush()

    def add(self, r: FileResult) -> None:
        """Write one row (buffered until `flush`)."""
        if self._csv is not None:
            self._csv.writerow(csv_row(r, self.k))
        else:
            self.stream.write(json.dumps(r.to_dict()) + "\n")

    def write(self, results: Iterable[FileResult]) -> None:
        for r in results:
            self.add(r)
        self.flush()

    def flush(self) -> None:
        self.stream.flush()
        try:
            os.fsync(self.stream.fileno())
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            pass  # a pipe or a terminal: flushed is as far as it goes


def read_results(path: str | Path, fmt: str | None = None) -> tuple[list[FileResult], dict]:
    """(rows, meta) of a result file written by `c2p classify`; lines cut short by a crash are
    skipped. Raises `UsageError` when the file is not a result file at all."""
    path = Path(path)
    fmt = format_of(path, fmt)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: cannot read the earlier results ({getattr(e, 'strerror', None) or e})") from e
    rows: list[FileResult] = []
    meta: dict = {}
    bad = 0
    if fmt == "json":
        try:
            doc = json.loads(text)
            meta = doc.get("meta") or {}
            items = doc["results"]
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise UsageError(f"{path}: not a results file of c2p classify ({type(e).__name__})") from e
        for item in items if isinstance(items, list) else []:
            try:
                rows.append(FileResult.from_dict(item))
            except (ValueError, TypeError, KeyError, AttributeError):
                bad += 1
    elif fmt == "csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if text.strip() and "path" not in (reader.fieldnames or []):
            raise UsageError(f"{path}: not a results file of c2p classify (no path column)")
        for row in reader:
            try:
                rows.append(_csv_result(row))
            except (ValueError, TypeError, KeyError, AttributeError):
                bad += 1
    else:
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                rows.append(FileResult.from_dict(json.loads(line)))
            except (ValueError, TypeError, KeyError, AttributeError):
                bad += 1
    if bad and not rows:
        raise UsageError(f"{path}: not a results file of c2p classify ({bad} unreadable rows)")
    return rows, meta
