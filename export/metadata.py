"""The export folder's layout and its `c2p_export.json`: what a runtime needs to use the graphs.

Only the standard library is imported here: the torch-free runner (`clip2point.export.run_onnx`) reads the
metadata too.

An export folder holds
    classifier.onnx          depth maps [B, V, C, S, S] -> logits [B, K]
    points_classifier.onnx   (optional) padded points [B, N, 3] + lengths [B] -> logits [B, K]
    classifier.engine        (optional) TensorRT engine built from classifier.onnx
    timing.cache             (optional) TensorRT timing cache, reused by the next build
    c2p_export.json          labels, prompts, views, normalisation, models, shapes, checks
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from clip2point.atomic import atomic_write_bytes
from clip2point.errors import CheckpointError, ExportCheckError, Opt, OptionError

FORMAT = "c2p-export"
FORMAT_VERSION = 1

METADATA_FILE = "c2p_export.json"
CLASSIFIER_ONNX = "classifier.onnx"
POINTS_ONNX = "points_classifier.onnx"
ENGINE_FILE = "classifier.engine"
TIMING_CACHE_FILE = "timing.cache"

DEPTH_INPUT = "depth"
POINTS_INPUT = "points"
LENGTHS_INPUT = "lengths"
LOGITS_OUTPUT = "logits"

# Keys every c2p_export.json has; a runtime refuses a folder without them.
REQUIRED_KEYS = ("format", "format_version", "labels", "views", "image_size", "radius", "in_channels", "graphs")


def write_metadata(folder: str | Path, meta: dict[str, Any]) -> Path:
    """Atomically write `folder/c2p_export.json` (pretty, sorted keys) and return its path."""
    data = (json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n").encode()
    return atomic_write_bytes(Path(folder) / METADATA_FILE, data)


def read_metadata(folder: str | Path) -> dict[str, Any]:
    """The metadata of an export folder; a missing, unreadable or foreign file is a `CheckpointError`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not an export folder (no such folder; make one with `c2p export --out {folder}`)")
    path = folder / METADATA_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: not found (is {folder} a `c2p export` folder?)")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a c2p export description (format is not {FORMAT!r})")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {meta['format_version']} is newer than this c2p reads ({FORMAT_VERSION}); upgrade c2p"
        )
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise CheckpointError(f"{path}: missing {', '.join(missing)}")
    return meta


def graph_path(folder: str | Path, meta: dict[str, Any], graph: str) -> Path:
    """The file of `graph` ("classifier", "points_classifier" or "engine") listed in the metadata.

    Raises `CheckpointError` when the export does not hold it or the file is gone.
    """
    entry = meta.get("graphs", {}).get(graph)
    hints = {
        "points_classifier": "export again with --with-projection",
        "engine": "export again with --trt on a machine with TensorRT and an NVIDIA GPU",
        "classifier": "export again",
    }
    if not entry:
        raise CheckpointError(f"{folder}: this export has no {graph} graph ({hints.get(graph, 'export again')})")
    path = Path(folder) / entry["file"]
    if not path.is_file():
        raise CheckpointError(f"{path}: listed in {METADATA_FILE} but missing ({hints.get(graph, 'export again')})")
    return path


def views_from_meta(meta: dict[str, Any]) -> list[tuple[float, float]]:
    """The (elevation, azimuth) pairs recorded in the metadata."""
    return [(float(e), float(a)) for e, a in meta["views"]]


def profile_batches(max_batch: int, opt_batch: int | None = None) -> tuple[int, int, int]:
    """(min, opt, max) batch sizes of a TensorRT optimisation profile.

    `opt` defaults to the largest power of two not above half of `max_batch` (at least 1): the
    batch the engine is tuned for, typical of `c2p classify`'s batches, while still leaving room.
    """
    if max_batch < 1:
        raise OptionError(Opt("max_batch"), f" must be at least 1, got {max_batch}")
    if opt_batch is None:
        opt_batch = 1
        while opt_batch * 2 <= max(1, max_batch // 2):
            opt_batch *= 2
    if not 1 <= opt_batch <= max_batch:
        raise OptionError(Opt("opt_batch"), " must be between 1 and ", Opt("max_batch"), f" ({max_batch}), got {opt_batch}")
    return 1, opt_batch, max_batch


def refuse_failed_check(folder: str | Path, meta: dict[str, Any], graph: str) -> None:
    """ExportCheckError when `graph`'s parity check, as recorded at export, did not pass.

    `graph`: "classifier", "points_classifier" (checks in `check`) or "engine" (`tensorrt.check`).
    `c2p export` records a failed check and raises, but leaves the files; a runtime must not use
    them. A graph exported with the check skipped has no record and is used as is.
    """
    if graph == "engine":
        check = meta.get("tensorrt", {}).get("check")
    else:
        check = meta.get("check", {}).get(graph)
    if not isinstance(check, dict) or check.get("passed", True):
        return
    name = meta.get("graphs", {}).get(graph, {}).get("file", graph)
    diff = check.get("max_abs_diff")
    measured = f"max abs diff {diff:.3g}" if isinstance(diff, (int, float)) else "no measurement"
    raise ExportCheckError(
        f"{Path(folder) / name}: failed its check at export ({measured}); re-export it with `c2p export` before using it"
    )
