"""Classify files with an export's points_classifier.onnx, without torch.

    python -m clip2point.export.run_onnx EXPORT_DIR_OR_ONNX FILES_OR_FOLDERS... [--output results.jsonl] [--top-k 3]

The first argument is a `c2p export --with-projection` folder, or the points graph file alone
(points_classifier.onnx / points_classifier.int8.onnx): every graph carries its labels, views, up
axis, points and model id in its ONNX metadata_props, so a deployed .onnx file needs nothing beside it.

Only numpy, onnxruntime and the numpy-only modules of this project (clip2point.io, clip2point.views,
clip2point.errors, clip2point.engine.batching, clip2point.engine.result_files, clip2point.export.metadata,
clip2point.export.ort_session, clip2point.store.run_files) are imported: a machine with neither torch nor a GPU can
classify. The graph holds the renderer and the encoder, so files only need to be read, sampled
and normalised (clip2point.io.read_cloud) and padded into one batch. Each result has the keys of
`c2p classify`'s results (path, label, probability, top_k, n_points, error); a file that cannot
be read becomes a result with an error and never costs the rest of the batch.
Output: a table on stdout, and --output FILE as JSON Lines (.jsonl), JSON (.json, with "meta") or CSV,
written by the same code as `c2p classify --output`.
Exit code 0 when every file was classified, 1 when some failed, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clip2point.engine.batching import FileResult, ReadOptions, in_input_order, pad_clouds, read_one
from clip2point.engine.inputs import gather_inputs
from clip2point.engine.result_files import check_output_path, write_results
from clip2point.errors import BackendUnavailableError, C2PError, CheckpointError, UsageError

from . import metadata as md
from .ort_session import load_session, output_classes, run


def _session(path: Path):
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise BackendUnavailableError("onnxruntime is not installed: pip install onnxruntime") from e
    providers = ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return load_session(ort, path, providers)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (stable: the row maximum is subtracted first)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class OnnxPointsClassifier:
    """An export's points graph: prepared clouds -> probabilities, numpy only.

    `source`: an export folder (its c2p_export.json names the graph) or a points graph .onnx file
    (described by its own metadata_props). `precision`: "float32" or "int8" in a folder; None takes
    the export's own (int8 after `--quantize int8`).
    """

    def __init__(self, source: str | Path, precision: str | None = None):
        source = Path(source)
        if source.is_file():
            self.folder = source.parent
            self.path = source
            self.session = _session(self.path)
            self.meta = md.meta_from_props(dict(self.session.get_modelmeta().custom_metadata_map), source)
            key = next(iter(self.meta["graphs"]))
            if not key.startswith("points_classifier"):
                raise UsageError(f"{source}: a depth-map graph (classifier.onnx) needs the renderer in torch; "
                                 "give points_classifier.onnx (c2p export --with-projection), or use c2p classify --engine")  # fmt: skip
            if precision and self.meta["precision"] != precision:
                raise UsageError(f"{source}: a {self.meta['precision']} graph, not {precision}")
        else:
            self.folder = source
            self.meta = md.read_metadata(self.folder)
            key = md.graph_key("points_classifier", precision, self.meta)
            self.path = md.graph_path(self.folder, self.meta, key)
        md.refuse_failed_check(self.folder, self.meta, key)
        if source.is_dir():
            self.session = _session(self.path)
        self.graph = key
        self.labels: list[str] = list(self.meta["labels"])
        self.providers = self.session.get_providers()
        names = sorted(i.name for i in self.session.get_inputs())
        if names != sorted((md.POINTS_INPUT, md.LENGTHS_INPUT)):
            raise CheckpointError(f"{self.path}: expected inputs {md.POINTS_INPUT!r} and {md.LENGTHS_INPUT!r}, got {names}")
        described_in = f"{source}: ONNX metadata {md.PROP_PREFIX}labels" if source.is_file() else self.folder / md.METADATA_FILE
        md.check_labels_fit(len(self.labels), output_classes(self.session, self.path), described_in, self.path)
        self.labels_from = (len(self.labels), str(described_in))

    def logits(self, points: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        feeds = {md.POINTS_INPUT: np.ascontiguousarray(points, dtype=np.float32), md.LENGTHS_INPUT: lengths.astype(np.int64)}
        return run(self.session, feeds, self.path, self.labels_from)

    def predict(self, clouds: Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities [B, K] for clouds already prepared by `clip2point.io.read_cloud`."""
        points, lengths = pad_clouds(clouds, min_points=2)
        return softmax(self.logits(points, lengths))


def classify_files(
    clf: OnnxPointsClassifier,
    paths: Sequence[str | Path],
    *,
    read: ReadOptions,
    batch_size: int = 32,
    top_k: int = 3,
    recursive: bool = False,
) -> list[FileResult]:
    """A FileResult per input file, in the order given; unreadable files carry their error."""
    entries = gather_inputs(paths, recursive=recursive)
    files = [e for e in entries if isinstance(e, Path)]
    classified: list[FileResult] = []
    for start in range(0, len(files), batch_size):
        batch = [(str(p), *read_one(p, read)) for p in files[start : start + batch_size]]
        good = [(p, c) for p, c, err in batch if err is None]
        probs = iter(clf.predict([c for _, c in good]) if good else ())
        for p, c, err in batch:
            classified.append(
                FileResult(path=p, error=err) if err is not None
                else FileResult.from_probabilities(p, next(probs), clf.labels, top_k, len(c))
            )  # fmt: skip
    return list(in_input_order(entries, classified))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m clip2point.export.run_onnx",
        description="Classify point clouds and meshes with a `c2p export --with-projection` folder, or its "
        "points_classifier.onnx alone, without torch.",
    )
    p.add_argument("export_dir", type=Path, help="A `c2p export` folder holding points_classifier.onnx, or that file itself.")
    p.add_argument("paths", nargs="+", type=Path, help="Point-cloud / mesh files and folders.")
    p.add_argument("--output", "-o", type=Path, help="Write results to .jsonl, .json or .csv.")
    p.add_argument("--top-k", type=int, default=3, help="How many labels to report per file.")
    p.add_argument("--batch-size", "-b", type=int, default=32, help="Shapes per batch.")
    p.add_argument("--points", type=int, default=None, help="Points sampled per shape (default: the export's).")
    p.add_argument("--sampling", default=None, choices=("random", "fps"), help="Point sampling (default: the export's).")
    p.add_argument("--precision", default=None, choices=md.PRECISIONS, help="float32 or int8 graph of a folder (default: the export's).")
    p.add_argument("--up", default=None, choices=("z", "y"), help="The shapes' up axis (default: the export's).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--recursive", "-r", action="store_true", help="Descend into sub-folders.")
    p.add_argument("--quiet", "-q", action="store_true", help="No table on stdout.")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.output is not None:
            check_output_path(args.output)
        if args.top_k < 1 or args.batch_size < 1:
            raise UsageError("--top-k and --batch-size must be at least 1")
        if not 0 <= args.seed <= 2**32 - 1 or (args.points is not None and not 1 <= args.points <= 1_000_000):
            raise UsageError("--seed must be between 0 and 4294967295 and --points between 1 and 1000000")
        clf = OnnxPointsClassifier(args.export_dir, precision=args.precision)
        prep = clf.meta.get("points", {})
        read = ReadOptions(n_points=args.points or int(prep.get("n_points", 1024)),
                           sampling=args.sampling or prep.get("sampling", "random"),
                           seed=args.seed, up=args.up or prep.get("up_axis", "z"))  # fmt: skip
        read.validate()
        results = classify_files(clf, args.paths, read=read, batch_size=args.batch_size, top_k=args.top_k,
                                 recursive=args.recursive)  # fmt: skip
    except C2PError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    if not args.quiet:
        for r in results:
            if r.ok:
                others = ", ".join(f"{lab} {p:.2f}" for lab, p in r.top_k[1:])
                print(f"{r.path}\t{r.label}\t{r.probability:.3f}\t{others}")
            else:
                print(f"{r.path}\terror\t\t{r.error}")
    if args.output is not None:
        meta = {"export": str(args.export_dir), "backend": "onnxruntime (torch-free)", "providers": clf.providers,
                "onnx_file": str(clf.path), "precision": "int8" if clf.graph.endswith(md.INT8_SUFFIX) else "float32",
                **{k: clf.meta[k] for k in ("model", "pretrained", "weights_id", "adapter") if k in clf.meta}}  # fmt: skip
        try:
            write_results(args.output, results, meta)
        except C2PError as e:
            print(f"error: {e}", file=sys.stderr)
            return e.exit_code
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
