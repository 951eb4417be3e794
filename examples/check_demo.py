"""Say how many example scans `make demo` classified as their true class, and which it missed.

Each example scan is named after its true class (examples/make_examples.py). Reads the results file
`c2p classify --output` wrote (.csv, .jsonl or .json). Always exits 0: it reports, it does not judge.

    python examples/check_demo.py demo_results.csv
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path


def read_results(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        with path.open(newline="") as f:
            return list(csv.DictReader(f))
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return json.loads(path.read_text())["results"]


def main(path: Path) -> int:
    rows = read_results(path)
    missed = []
    for row in rows:
        truth = Path(row["path"]).stem
        label = row.get("label") or ""
        if label != truth:
            what = f"classified as {label!r}" if label else f"failed: {row.get('error')}"
            missed.append(f"  {Path(row['path']).name}: {what}")
    right = len(rows) - len(missed)
    print(f"{right} of {len(rows)} example scans classified as their true class (the class is the file name)")
    if missed:
        print("missed:\n" + "\n".join(missed))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "demo_results.csv")))
