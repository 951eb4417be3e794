"""The export folder's layout and its `c2p_export.json`: what a runtime needs to use the graphs.

Every .onnx file also describes itself: its `metadata_props` hold the labels, views, input
preparation (points, up axis, sampling), model identifiers and its check result under `c2p.*` keys
(`graph_props` writes them, `meta_from_props` reads them back), so a deployed .onnx file alone is
enough for `python -m clip2point.export.run_onnx` and `c2p classify --engine FILE.onnx`.

Only the standard library is imported here: the torch-free runner (`clip2point.export.run_onnx`) reads the
metadata too. Both descriptions may come from anywhere: every field a runtime uses is checked by the
rules of run files (clip2point.store.run_files: labels, views, image size, radius, points), one
error naming the file and the field, and the labels must match the graph's output size
(`check_labels_fit`).

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
import re
from pathlib import Path
from typing import Any

from clip2point import option_table
from clip2point.errors import CheckpointError, ExportCheckError, Opt, OptionError
from clip2point.store import run_files as rf
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
# Identifiers copied from c2p_export.json into each graph when present.
PROP_IDENTITY = ("model", "pretrained", "weights_id", "depth_encoder", "adapter", "fusion")

# The fields runtimes use, checked by the rules of run files. A graph's file is a name inside the
# export folder, never a path.
_GRAPH_FILE = re.compile(r"^(?!\.\.?$)[^/\\]+$")
_IN_CHANNELS = rf.integer(1, 3)
_CHECK = rf.mapping({"passed": rf.optional(rf.boolean())})
_POINTS = {"n_points": rf.optional(rf.N_POINTS), "up_axis": rf.optional(rf.UP_AXIS), "sampling": rf.optional(rf.SAMPLING)}
EXPORT_FILE: dict[str, rf.Rule] = {
    "labels": rf.LABELS,
    "views": rf.VIEWS,
    "image_size": rf.IMAGE_SIZE,
    "radius": rf.RADIUS,
    "in_channels": _IN_CHANNELS,
    "graphs": rf.mapping(values=rf.mapping({"file": rf.text(pattern=_GRAPH_FILE)}), high=16),
    "points": rf.optional(rf.mapping(_POINTS)),
    "precision": rf.optional(rf.text(PRECISIONS)),
    "check": rf.optional(rf.mapping(values=rf.optional(_CHECK), high=16)),
    "tensorrt": rf.optional(rf.mapping({"check": rf.optional(_CHECK)})),
    **{key: rf.optional(rf.text()) for key in PROP_IDENTITY},
}


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
    rf.check_fields(path, meta, EXPORT_FILE)
    return meta


def graph_path(folder: str | Path, meta: dict[str, Any], graph: str) -> Path:
    """The file of `graph` ("classifier", "points_classifier" or "engine") listed in the metadata.

    Raises `CheckpointError` when the export does not hold it or the file is gone.
    """
    entry = meta.get("graphs", {}).get(graph)
    hints = {  # the command that writes each graph
        "points_classifier": "export again: c2p export --with-projection",
        "engine": "export again: c2p export --trt, on a machine with TensorRT and an NVIDIA GPU",
        "classifier": "export again",
        "classifier_int8": "export again: c2p export --quantize int8",
        "points_classifier_int8": "export again: c2p export --with-projection --quantize int8",
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
MAX_PROP_BYTES = 16 << 20
# A graph's c2p.* metadata_props: plain strings for these keys, JSON for the others.
_TEXT_PROPS = ("format", "graph", "precision", "up_axis", "sampling", "version", *PROP_IDENTITY)
GRAPH_PROPS: dict[str, rf.Rule] = {
    "format": rf.text((FORMAT,)),
    "format_version": rf.integer(1, 1 << 30),
    "graph": rf.text(("classifier", "points_classifier")),
    "precision": rf.optional(rf.text(PRECISIONS)),
    "labels": rf.LABELS,
    "views": rf.VIEWS,
    "image_size": rf.IMAGE_SIZE,
    "radius": rf.RADIUS,
    "in_channels": _IN_CHANNELS,
    **{key: rf.optional(rule) for key, rule in _POINTS.items()},
    "version": rf.optional(rf.text()),
    "check": rf.optional(rf.mapping({"passed": rf.optional(rf.boolean())})),
    **{key: rf.optional(rf.text()) for key in PROP_IDENTITY},
}


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
    return rf.RunFileError(path, f"ONNX metadata {PROP_PREFIX}{key}", problem)


def _parse_props(props: dict[str, str], path: str | Path) -> dict[str, Any]:
    """The c2p.* metadata_props as values: strings kept for the text keys, JSON parsed for the others."""
    values: dict[str, Any] = {}
    for key in GRAPH_PROPS:
        raw = props.get(PROP_PREFIX + key)
        if raw is None or key in _TEXT_PROPS:
            if raw is not None:
                values[key] = raw
            continue
        try:
            values[key] = json.loads(raw)
        except (json.JSONDecodeError, RecursionError):
            raise _bad(path, key, "is not valid JSON") from None
    return values


def meta_from_props(props: dict[str, str], path: str | Path) -> dict[str, Any]:
    """An export's metadata (the keys runtimes use) rebuilt from one graph's `c2p.*` metadata_props.

    The file may come from anywhere: every value is checked by the rules of run files (type,
    range, choices), and a missing or bad one is a `CheckpointError` naming the file and the key.
    """
    if not any(k.startswith(PROP_PREFIX) for k in props):
        raise CheckpointError(f"{path}: no c2p metadata in this ONNX file (not made by c2p export, or stripped); "
                              f"give its export folder instead")  # fmt: skip
    if sum(len(k) + len(v) for k, v in props.items()) > MAX_PROP_BYTES:
        raise CheckpointError(f"{path}: ONNX metadata larger than {MAX_PROP_BYTES >> 20} MiB")
    values = _parse_props(props, path)
    version = values.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise _bad(path, "format_version", f"{version} is newer than this c2p reads ({FORMAT_VERSION}); upgrade c2p")
    rf.check_fields(path, values, GRAPH_PROPS, prefix=f"ONNX metadata {PROP_PREFIX}")
    precision = values.get("precision", "float32")
    key = values["graph"] + (INT8_SUFFIX if precision == "int8" else "")
    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": version,
        "c2p_version": values.get("version"),
        "labels": values["labels"],
        "views": [[float(e), float(a)] for e, a in values["views"]],
        "num_views": len(values["views"]),
        "image_size": values["image_size"],
        "radius": float(values["radius"]),
        "in_channels": values["in_channels"],
        "points": {"n_points": values.get("n_points") or 1024, "up_axis": values.get("up_axis") or "z",
                   "sampling": values.get("sampling") or "random"},  # fmt: skip
        "precision": precision,
        "graphs": {key: {"file": Path(path).name}},
        "source": "onnx metadata_props",
        **{name: values[name] for name in PROP_IDENTITY if name in values},
    }
    check = values.get("check")
    if isinstance(check, dict) and isinstance(check.get("passed"), bool):
        meta["check"] = {key: {k: check[k] for k in ("passed", "max_abs_diff") if k in check}}
    return meta


def check_labels_fit(n_labels: int, outputs: Any, described_in: str | Path, graph: str | Path) -> None:
    """CheckpointError unless the graph's logits have one column per label (`outputs`: the logits'
    class dimension; a symbolic one is checked when the graph runs)."""
    if isinstance(outputs, int) and not isinstance(outputs, bool) and outputs > 0 and outputs != n_labels:
        raise CheckpointError(
            f"{described_in}: lists {n_labels} label{'s' * (n_labels != 1)}, but {Path(graph).name} outputs "
            f"{outputs} classes "
            "(the labels do not belong to this graph)"
        )
