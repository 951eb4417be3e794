"""Writing classification results for machines: JSON Lines, JSON or CSV, chosen by extension.

Standard library only (besides clip2point.batching), so the torch-free ONNX runner writes the same files.

Files are written to a temporary name and renamed, so a failed run never clobbers an earlier
result file.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

from .batching import FileResult
from .errors import Opt, OptionError, UsageError

FORMATS = (".jsonl", ".json", ".csv")


def check_output_path(path: Path) -> None:
    """Fail before any work is done when the output cannot be written (format, folder, permissions)."""
    import os

    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise OptionError(Opt("output"), f" {path}: unknown format '{path.suffix}' (use one of {', '.join(FORMATS)})")
    if path.is_dir():
        raise OptionError(Opt("output"), f" {path}: is a folder; give a file name such as {path / 'results.csv'}")
    parent = path.parent if str(path.parent) else Path(".")
    if parent.exists() and not os.access(parent, os.W_OK):
        raise OptionError(Opt("output"), f" {path}: cannot write in {parent}")


def render_results(results: Sequence[FileResult], suffix: str, meta: dict | None = None) -> str:
    suffix = suffix.lower()
    if suffix == ".jsonl":
        return "".join(json.dumps(r.to_dict()) + "\n" for r in results)
    if suffix == ".json":
        return json.dumps({"meta": meta or {}, "results": [r.to_dict() for r in results]}, indent=2) + "\n"
    if suffix == ".csv":
        buf = io.StringIO()
        k = max((len(r.top_k) for r in results), default=0)
        header = ["path", "label", "probability", "n_points", "error"]
        for i in range(2, k + 1):
            header += [f"label_{i}", f"probability_{i}"]
        w = csv.writer(buf)
        w.writerow(header)
        for r in results:
            row = [r.path, r.label or "", "" if r.probability is None else f"{r.probability:.6f}", r.n_points or "", r.error or ""]
            for i in range(1, k):
                row += [r.top_k[i][0], f"{r.top_k[i][1]:.6f}"] if i < len(r.top_k) else ["", ""]
            w.writerow(row)
        return buf.getvalue()
    raise UsageError(f"unknown output format '{suffix}' (use one of {', '.join(FORMATS)})")


def write_results(path: str | Path, results: Sequence[FileResult], meta: dict | None = None) -> None:
    from .atomic import atomic_write_bytes
    from .errors import C2PError

    path = Path(path)
    check_output_path(path)
    try:
        atomic_write_bytes(path, render_results(results, path.suffix, meta).encode())
    except OSError as e:
        raise C2PError(f"{path}: cannot write the results ({e.strerror or e})") from e
