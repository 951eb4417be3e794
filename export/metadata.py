"""The export folder's layout and its `c2p_export.json`: what a runtime needs to use the graphs.

Every .onnx file also describes itself: its `metadata_props` hold the labels, views, input
preparation (points, up axis, sampling), model identifiers and its check result under `c2p.*` keys
(`graph_props` writes them, `meta_from_props` reads them back), so a deployed .onnx file alone is
enough for `python -m clip2point.export.run_onnx` and `c2p classify --engine FILE.onnx`.

Only the standard library is imported here: the torch-free runner (`clip2point.export.run_onnx`) reads the
metadata too.

An export folder holds
    classifier.onnx          depth maps [B, V, C, S, S] -> logits [B, K]
    points_classifier.onnx   (optional) padded points [B, N, 3] + lengths [B] -> logits [B, K]
    *.int8.onnx              (optional, --quantize int8) the same graphs with dynamically quantised
                             int8 weights (MatMul/Gemm); the renderer stays float32
    classifier.engine        (optional) TensorRT engine built from classifier.onnx
    timing.cache             (optional) TensorRT timing cache, reused by the next build
    c2p_export.json          labels, prompts, views, normalisation, models, shapes, checks
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from clip2point import option_table
from clip2point.errors import CheckpointError, ExportCheckError, Opt, OptionError
from clip2point.store.atomic import atomic_write_bytes

FORMAT = "c2p-export"
FORMAT_VERSION = 1

METADATA_FILE = "c2p_export.json"
CLASSIFIER_ONNX = "classifier.onnx"
POINTS_ONNX = "points_classifier.onnx"
CLASSIFIER_INT8_ONNX = "classifier.int8.onnx"
POINTS_INT8_ONNX = "points_classifier.int8.onnx"
ENGINE_FILE = "classifier.engine"
TIMING_CACHE_FILE = "timing.cache"

DEPTH_INPUT = "depth"
POINTS_INPUT = "points"
LENGTHS_INPUT = "lengths"
LOGITS_OUTPUT = "logits"

# Graph keys of the metadata's "graphs": float32 graphs and their int8 versions.
INT8_SUFFIX = "_int8"
PRECISIONS = option_table.choices("graph_precision")

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
        "classifier_int8": "export again with --quantize int8",
        "points_classifier_int8": "export again with --with-projection --quantize int8",
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


def graph_key(graph: str, precision: str | None, meta: dict[str, Any]) -> str:
    """The metadata key of `graph` ("classifier" / "points_classifier") at `precision`.

    None: the export's own choice (`meta["precision"]`, "int8" after `--quantize int8`, else float32).
    """
    chosen = precision or meta.get("precision") or "float32"
    if chosen not in PRECISIONS:
        raise OptionError(Opt("precision"), f" must be one of {', '.join(PRECISIONS)}, got {chosen!r}")
    return graph + INT8_SUFFIX if chosen == "int8" else graph


# ---------------------------------------------------------------------------------------------
# Self-describing graphs: ONNX metadata_props
# ---------------------------------------------------------------------------------------------

PROP_PREFIX = "c2p."
# Identifiers copied from c2p_export.json into each graph when present.
PROP_IDENTITY = ("model", "pretrained", "weights_id", "depth_encoder", "adapter", "fusion")
MAX_LABELS = option_table.MAX_LABELS
MAX_VIEWS = option_table.MAX_VIEWS
MAX_POINTS = option_table.MAX_SAMPLE_POINTS
MAX_PROP_BYTES = 16 << 20


def graph_props(meta: dict[str, Any], graph: str) -> dict[str, str]:
    """The `c2p.*` metadata_props of the graph `graph` (a key of meta["graphs"]), all values strings
    (JSON for lists and objects), from the export's metadata."""
    entry = meta.get("graphs", {}).get(graph, {})
    check = meta.get("check", {}).get(graph)
    points = meta.get("points", {})
    props: dict[str, Any] = {
        "format": meta["format"],
        "format_version": meta["format_version"],
        "version": meta.get("c2p_version"),
        "graph": graph.removesuffix(INT8_SUFFIX),
        "precision": "int8" if graph.endswith(INT8_SUFFIX) else "float32",
        "labels": meta["labels"],
        "views": meta["views"],
        "image_size": meta["image_size"],
        "radius": meta["radius"],
        "in_channels": meta["in_channels"],
        "n_points": points.get("n_points"),
        "up_axis": points.get("up_axis"),
        "sampling": points.get("sampling"),
        "inputs": entry.get("inputs"),
        **{key: meta.get(key) for key in PROP_IDENTITY},
    }
    if isinstance(check, dict):
        props["check"] = {k: check[k] for k in ("passed", "rule", "max_abs_diff", "argmax_agreement", "max_prob_diff") if k in check}
    return {PROP_PREFIX + k: v if isinstance(v, str) else json.dumps(v, sort_keys=True)
            for k, v in props.items() if v is not None}  # fmt: skip


def _bad(path, key: str, problem: str) -> CheckpointError:
    return CheckpointError(f"{path}: ONNX metadata {PROP_PREFIX}{key} {problem}")


def meta_from_props(props: dict[str, str], path: str | Path) -> dict[str, Any]:
    """An export's metadata (the keys runtimes use) rebuilt from one graph's `c2p.*` metadata_props.

    The file may come from anywhere: every value is type- and range-checked, and a missing or bad
    one is a `CheckpointError` naming the file and the key.
    """
    if not any(k.startswith(PROP_PREFIX) for k in props):
        raise CheckpointError(f"{path}: no c2p metadata in this ONNX file (not made by c2p export, or stripped); "
                              f"give its export folder instead")  # fmt: skip
    if sum(len(k) + len(v) for k, v in props.items()) > MAX_PROP_BYTES:
        raise CheckpointError(f"{path}: ONNX metadata larger than {MAX_PROP_BYTES >> 20} MiB")

    def text(key: str, required: bool = True) -> str | None:
        value = props.get(PROP_PREFIX + key)
        if value is None and required:
            raise _bad(path, key, "is missing")
        return value

    def parsed(key: str, required: bool = True):
        raw = text(key, required)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, RecursionError):
            raise _bad(path, key, "is not valid JSON") from None

    def number(key: str, kind, low, high, required: bool = True):
        value = parsed(key, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
            raise _bad(path, key, f"must be a number, got {str(value)[:40]!r}")
        if not low <= value <= high:
            raise _bad(path, key, f"must be between {low} and {high}, got {value}")
        return kind(value)

    if text("format") != FORMAT:
        raise _bad(path, "format", f"is not {FORMAT!r}")
    version = number("format_version", int, 1, 1 << 30)
    if version > FORMAT_VERSION:
        raise _bad(path, "format_version", f"{version} is newer than this c2p reads ({FORMAT_VERSION}); upgrade c2p")
    graph = text("graph")
    if graph not in ("classifier", "points_classifier"):
        raise _bad(path, "graph", f"must be classifier or points_classifier, got {graph[:40]!r}")
    precision = text("precision", required=False) or "float32"
    if precision not in PRECISIONS:
        raise _bad(path, "precision", f"must be one of {', '.join(PRECISIONS)}")
    labels = parsed("labels")
    if not isinstance(labels, list) or not 1 <= len(labels) <= MAX_LABELS or not all(isinstance(x, str) and x for x in labels):
        raise _bad(path, "labels", f"must be a list of 1 to {MAX_LABELS} non-empty strings")
    views = parsed("views")
    if (not isinstance(views, list) or not 1 <= len(views) <= MAX_VIEWS or not all(
            isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
            for v in views)):  # fmt: skip
        raise _bad(path, "views", f"must be a list of 1 to {MAX_VIEWS} [elevation, azimuth] pairs")
    up = text("up_axis", required=False) or "z"
    if up not in option_table.choices("up"):
        raise _bad(path, "up_axis", "must be z or y")
    sampling = text("sampling", required=False) or "random"
    if sampling not in option_table.choices("sampling"):
        raise _bad(path, "sampling", "must be random or fps")
    key = graph + (INT8_SUFFIX if precision == "int8" else "")
    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": version,
        "c2p_version": text("version", required=False),
        "labels": labels,
        "views": [[float(e), float(a)] for e, a in views],
        "num_views": len(views),
        "image_size": number("image_size", int, 8, 4096),
        "radius": number("radius", float, 0.0, 1.0),
        "in_channels": number("in_channels", int, 1, 3),
        "points": {"n_points": number("n_points", int, 1, MAX_POINTS, required=False) or 1024, "up_axis": up, "sampling": sampling},
        "precision": precision,
        "graphs": {key: {"file": Path(path).name}},
        "source": "onnx metadata_props",
    }
    for name in PROP_IDENTITY:
        value = text(name, required=False)
        if value is not None:
            meta[name] = value[:1000]
    check = parsed("check", required=False)
    if isinstance(check, dict) and isinstance(check.get("passed"), bool):
        meta["check"] = {key: {k: check[k] for k in ("passed", "max_abs_diff") if k in check}}
    return meta
