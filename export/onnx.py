"""Export a classifier to ONNX and check the graphs against torch with ONNX Runtime.

Exporter. torch 2.14's `torch.onnx.export` defaults to the torch.export-based ("dynamo")
exporter; the TorchScript exporter (`dynamo=False`) is deprecated since torch 2.9. We use the
dynamo exporter: it exports both open_clip visual towers (ViT, ModifiedResNet), the adapters, and
the reference renderer (`scatter_reduce(amin)` -> ScatterElements(reduction="min"), opset >= 18)
with symbolic dimensions declared through `dynamic_shapes`, and its graph optimiser folds the
constant parts (the folded stem's weight, the text feature matrix) into initializers. Exported
graphs are written as one self-contained file (weights inline) below protobuf's 2 GB limit.

Graphs (names from clip2point.export.metadata):
    classifier.onnx         depth [B, V, C, S, S] float32 -> logits [B, K]; B dynamic, V, C, S fixed.
    points_classifier.onnx  points [B, N, 3] float32, lengths [B] int64 -> logits [B, K]; B and N
                            dynamic. Points are clouds already read by `clip2point.io.read_cloud`
                            (up-axis rotation and unit-sphere normalisation applied), zero-padded
                            to a common N; points at index >= lengths[b] are ignored.

Check. Each graph runs with ONNX Runtime (CPU provider) beside the torch module on the same inputs
and their logits are compared (`clip2point.export.parity`: the tolerance rule, the inputs); every
graph is stamped with its description and passes the full ONNX checker
(`clip2point.export.onnx_files`).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clip2point import defaults
from clip2point.errors import ExportCheckError, ModelError, Opt, OptionError, UsageError

from . import metadata as md
from .onnx_files import first_line, quantize_int8, stamp_graph
from .parity import (
    DEFAULT_RTOL,
    check_against_torch,
    compare_int8,
    cpu_session,
    raise_if_failed,
    random_depth_maps,
    run_session,
    summarise,
    summarise_int8,
    synthetic_clouds,
    synthetic_depth_maps,
)

MIN_OPSET = 18
DEFAULT_OPSET = 18
# The batch of the example inputs given to the exporter: not 0 or 1, which torch.export
# specialises, so that the batch stays symbolic.
EXAMPLE_BATCH = 2

# Keys of PointCloudClassifier.meta copied to the top level of c2p_export.json.
IDENTITY_KEYS = (
    "model", "pretrained", "weights_id", "weights", "depth_encoder", "depth_encoder_sha256", "templates",
    "adapter", "adapter_format", "which", "fusion",
)

log = logging.getLogger("c2p.export")


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------


class PointsToLogits(nn.Module):
    """The whole pipeline as one module: padded points -> reference renderer -> depth head -> logits."""

    def __init__(self, head: nn.Module, views, *, in_channels: int, image_size: int, radius: float):
        super().__init__()
        from clip2point.views import camera_bases

        self.head = head
        self.register_buffer("bases", camera_bases(views), persistent=False)
        self.in_channels = in_channels
        self.image_size = image_size
        self.radius = radius

    def forward(self, points: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        from clip2point.kernels import render_depth

        depth = render_depth(
            points,
            self.bases,
            lengths=lengths,
            image_size=self.image_size,
            radius=self.radius,
            channels=self.in_channels,
            backend="torch",
        )
        return self.head(depth)


def _check_opset(opset: int) -> int:
    if opset < MIN_OPSET:
        raise OptionError(Opt("opset"), f" must be at least {MIN_OPSET} (ScatterElements with reduction='min'), got {opset}")
    return int(opset)


def _torch_export(module: nn.Module, args: tuple, path: Path, *, input_names, dynamic_shapes, opset: int) -> None:
    """torch.onnx.export with the dynamo exporter, quietly (it prints progress to stdout)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                args,
                str(path),
                dynamo=True,
                input_names=list(input_names),
                output_names=[md.LOGITS_OUTPUT],
                dynamic_shapes=dynamic_shapes,
                opset_version=opset,
                external_data=False,
                verbose=False,
            )
    except Exception as e:  # the exporter raises many types; all mean "this module did not export"
        log.debug("exporter output:\n%s", buf.getvalue())
        raise ModelError(f"{path.name}: ONNX export failed ({first_line(e)}); C2P_DEBUG=1 shows the traceback") from e


def _require_symbolic(path: Path, dims: dict[str, Sequence[int]]) -> dict[str, list]:
    """The graph's input shapes; raises ModelError when a dimension meant to be dynamic was fixed."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    shapes: dict[str, list] = {}
    for value in model.graph.input:
        shape = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        shapes[value.name] = shape
    for name, axes in dims.items():
        if name not in shapes:
            raise ModelError(f"{path.name}: the exported graph has no input {name!r} (inputs: {', '.join(shapes)})")
        fixed = [a for a in axes if not isinstance(shapes[name][a], str)]
        if fixed:
            raise ModelError(
                f"{path.name}: input {name!r} was exported with fixed dimension(s) {fixed} "
                f"(shape {shapes[name]}); the module must not branch on the batch size"
            )
    return shapes


def export_depth_graph(
    module: nn.Module,
    path: str | Path,
    *,
    num_views: int,
    in_channels: int,
    image_size: int = defaults.IMAGE_SIZE,
    opset: int = DEFAULT_OPSET,
) -> dict[str, list]:
    """Export `module` (depth [B, V, C, S, S] -> logits [B, K]) with a dynamic batch; returns input shapes."""
    path = Path(path)
    opset = _check_opset(opset)
    example = random_depth_maps(EXAMPLE_BATCH, num_views, in_channels, image_size, seed=1)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    _torch_export(
        module, (example,), path, input_names=[md.DEPTH_INPUT], dynamic_shapes=({0: batch},), opset=opset
    )
    return _require_symbolic(path, {md.DEPTH_INPUT: [0]})


def export_points_graph(
    head: nn.Module,
    path: str | Path,
    *,
    views,
    in_channels: int,
    image_size: int = defaults.IMAGE_SIZE,
    radius: float = defaults.POINT_RADIUS,
    opset: int = DEFAULT_OPSET,
    n_points: int = 256,
) -> dict[str, list]:
    """Export points [B, N, 3] + lengths [B] -> logits through the reference renderer; B and N dynamic."""
    path = Path(path)
    opset = _check_opset(opset)
    module = PointsToLogits(head, views, in_channels=in_channels, image_size=image_size, radius=radius).eval()
    points, lengths = synthetic_clouds(EXAMPLE_BATCH, n_points, seed=1, ragged=True)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    count = torch.export.Dim("points", min=2, max=1 << 22)
    _torch_export(
        module,
        (points, lengths),
        path,
        input_names=[md.POINTS_INPUT, md.LENGTHS_INPUT],
        dynamic_shapes={"points": {0: batch, 1: count}, "lengths": {0: batch}},
        opset=opset,
    )
    return _require_symbolic(path, {md.POINTS_INPUT: [0, 1], md.LENGTHS_INPUT: [0]})


# ---------------------------------------------------------------------------------------------
# The whole export
# ---------------------------------------------------------------------------------------------

QUANTIZE_CHOICES = (None, "int8")


@dataclass
class ExportOptions:
    """What `export_classifier` writes and how it checks it.

    `quantize="int8"` also writes int8 versions of the graphs (`*.int8.onnx`) and makes them the
    export's default for ONNX Runtime (`precision` in c2p_export.json); the float32 graphs stay
    (the TensorRT engine is built from classifier.onnx, and they are the int8 check's reference).
    """

    opset: int = DEFAULT_OPSET
    with_projection: bool = False
    check: bool = True
    rtol: float = DEFAULT_RTOL
    check_batch: int = 4
    check_points: int = defaults.NUM_POINTS
    n_points: int = defaults.NUM_POINTS
    seed: int = 0
    quantize: str | None = None
    up: str | None = None  # the shapes' up axis recorded for runtimes (default: the classifier's, else z)
    sampling: str | None = None  # likewise, random or fps


def _file_entry(folder: Path, name: str, shapes: dict[str, list], outputs: dict[str, list]) -> dict[str, Any]:
    path = folder / name
    return {"file": name, "bytes": path.stat().st_size, "inputs": shapes, "outputs": outputs}


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    from clip2point import __version__

    return {"c2p": __version__, "torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def _as_views(views) -> list[list[float]]:
    from clip2point.views import view_preset

    if isinstance(views, int):
        views = view_preset(views)
    return [[float(e), float(a)] for e, a in views]


class _Export:
    """One export: the folder, the graphs written so far, their checks, and the metadata. The stages
    (`depth_graph`, `points_graph`, `int8_graphs`) each write, stamp and check their graphs."""

    def __init__(self, classifier, out: Path, head: nn.Module, options: ExportOptions, extra_meta, on_step):
        self.classifier = classifier
        self.out = out
        self.head = head
        self.options = options
        self.extra_meta = extra_meta
        self.step = on_step or (lambda _msg: None)
        self.labels = list(classifier.labels)
        self.views = _as_views(classifier.views)
        self.in_channels = int(classifier.in_channels)
        self.image_size = int(getattr(classifier, "image_size", defaults.IMAGE_SIZE))
        self.radius = float(getattr(classifier, "radius", defaults.POINT_RADIUS))
        self.graphs: dict[str, Any] = {}
        self.checks: dict[str, Any] = {}
        # (reference torch callable, named inputs) of each float graph, for its int8 version's check
        self.references: dict[str, tuple[Callable | None, list[tuple[str, dict[str, torch.Tensor]]]]] = {}

    def metadata(self) -> dict[str, Any]:
        return build_metadata(
            self.classifier, labels=self.labels, views=self.views, in_channels=self.in_channels, image_size=self.image_size,
            radius=self.radius, graphs=self.graphs, checks=self.checks, options=self.options, extra_meta=self.extra_meta,
        )  # fmt: skip

    def finish(self, key: str, name: str, shapes: dict[str, list], started: float, extra: dict | None = None) -> dict:
        """Stamp the graph with its metadata_props, run the ONNX checker, record its entry, write c2p_export.json."""
        entry = _file_entry(self.out, name, shapes, {md.LOGITS_OUTPUT: ["batch", len(self.labels)]})
        entry.update(extra or {})
        self.graphs[key] = entry
        stamp_graph(self.out / name, md.graph_props(self.metadata(), key))
        entry["bytes"] = (self.out / name).stat().st_size
        entry["onnx_checker"] = "passed (full_check)"
        entry["export_seconds"] = round(time.perf_counter() - started, 2)
        meta = self.metadata()
        md.write_metadata(self.out, meta)
        return meta

    def remove_stale_files(self) -> None:
        """Files left by an earlier export would no longer match this one."""
        (self.out / md.ENGINE_FILE).unlink(missing_ok=True)
        stale = (md.CLASSIFIER_INT8_ONNX, md.POINTS_INT8_ONNX) + (() if self.options.with_projection else (md.POINTS_ONNX,))
        for name in stale:
            (self.out / name).unlink(missing_ok=True)

    def checked(self, key: str, name: str, shapes: dict[str, list], started: float, reference: Callable | None,
                feeds: list[tuple[str, dict[str, torch.Tensor]]], against: str = "torch") -> None:
        """Compare graph `name` with `reference` on every named input (when checking), then `finish` it;
        ExportCheckError after recording the measurements when the tolerance is exceeded."""
        options = self.options
        if not options.check:
            self.finish(key, name, shapes, started)
            return
        self.step(f"checking {name} against {against}")
        session = cpu_session(self.out / name)
        reports = [check_against_torch(session, reference, f, inputs=what, rtol=options.rtol) for what, f in feeds]
        del session
        self.references[key] = (reference, feeds)
        self.checks[key] = summarise(reports)
        self.finish(key, name, shapes, started)
        raise_if_failed(name, reports)

    def depth_graph(self) -> None:
        """classifier.onnx: depth maps -> logits; checked on random and rendered synthetic depth maps."""
        options, head = self.options, self.head
        self.step(f"exporting {md.CLASSIFIER_ONNX}")
        started = time.perf_counter()
        shapes = export_depth_graph(head, self.out / md.CLASSIFIER_ONNX, num_views=len(self.views),
                                    in_channels=self.in_channels, image_size=self.image_size, opset=options.opset)
        feeds = []
        if options.check:
            random_maps = random_depth_maps(options.check_batch, len(self.views), self.in_channels, self.image_size,
                                            seed=options.seed)
            real_maps = synthetic_depth_maps(options.check_batch + 1, self.views, self.in_channels, self.image_size,
                                             self.radius, n_points=options.check_points, seed=options.seed)
            feeds = [("random depth", {md.DEPTH_INPUT: random_maps}), ("synthetic depth", {md.DEPTH_INPUT: real_maps})]
        self.checked("classifier", md.CLASSIFIER_ONNX, shapes, started, head, feeds)

    def points_graph(self) -> None:
        """points_classifier.onnx: padded clouds -> logits, the reference renderer traced in; checked on
        synthetic clouds against the torch pipeline."""
        options = self.options
        self.step(f"exporting {md.POINTS_ONNX} (renderer traced in)")
        started = time.perf_counter()
        shape = dict(in_channels=self.in_channels, image_size=self.image_size, radius=self.radius)
        shapes = export_points_graph(self.head, self.out / md.POINTS_ONNX, views=self.views, opset=options.opset, **shape)
        pipeline, feeds = None, []
        if options.check:
            pipeline = PointsToLogits(self.head, self.views, **shape).eval()
            points, lengths = synthetic_clouds(options.check_batch + 1, options.check_points, seed=options.seed + 1)
            feeds = [("synthetic clouds", {md.POINTS_INPUT: points, md.LENGTHS_INPUT: lengths})]
        self.checked("points_classifier", md.POINTS_ONNX, shapes, started, pipeline, feeds, "the torch pipeline")

    def int8_graphs(self) -> None:
        """The int8 version of every float graph; its agreement with torch is recorded, not bounded."""
        todo = [("classifier", md.CLASSIFIER_ONNX, md.CLASSIFIER_INT8_ONNX)]
        if self.options.with_projection:
            todo.append(("points_classifier", md.POINTS_ONNX, md.POINTS_INT8_ONNX))
        for key, src, dst in todo:
            self.step(f"quantising {src} to int8 ({dst})")
            started = time.perf_counter()
            quant = quantize_int8(self.out / src, self.out / dst)
            reference, feeds = self.references.get(key, (None, []))
            if reference is not None:
                self.step(f"checking {dst} against torch")
                session = cpu_session(self.out / dst)
                with torch.no_grad():
                    runs = [compare_int8(reference(*f.values()).float().numpy(), run_session(session, f), inputs=name)
                            for name, f in feeds]  # fmt: skip
                del session
                self.checks[key + md.INT8_SUFFIX] = summarise_int8(runs)
            self.finish(key + md.INT8_SUFFIX, dst, self.graphs[key]["inputs"], started, {"quantization": quant})
            check = self.checks.get(key + md.INT8_SUFFIX)
            if check is not None and not check["passed"]:
                raise ExportCheckError(f"{dst}: int8 logits are not finite or have the wrong shape")


def export_classifier(
    classifier,
    out_dir: str | Path,
    options: ExportOptions | None = None,
    *,
    extra_meta: dict[str, Any] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Export a `classifier.PointCloudClassifier` (torch head) into `out_dir` and check it.

    Writes classifier.onnx, optionally points_classifier.onnx and their int8 versions, and
    c2p_export.json (returned). Every graph carries its description in its metadata_props and
    passes `onnx.checker.check_model(full_check=True)`. The check (unless `options.check` is
    False) compares ONNX Runtime with torch on random depth maps and on depth maps rendered from
    synthetic shapes (and, for the points graph, on the synthetic clouds themselves) and raises
    `ExportCheckError` with the measured difference when the tolerance is exceeded; the measured
    differences are recorded in the metadata and the graph either way a check ran. `extra_meta`
    (adapter run, prompts...) is merged into the metadata.
    """
    options = options or ExportOptions()
    if options.quantize not in QUANTIZE_CHOICES:
        raise OptionError(Opt("quantize"), f" must be int8 or None, got {options.quantize!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    head = getattr(classifier, "head", None)
    if not isinstance(head, nn.Module):
        raise UsageError("export needs a classifier whose head is a torch module (not an exported runtime)")
    # A CPU copy in eval mode: the check's torch reference runs where ONNX Runtime's CPU provider does.
    job = _Export(classifier, out, copy.deepcopy(head).cpu().eval(), options, extra_meta, on_step)
    job.remove_stale_files()
    job.depth_graph()
    if options.with_projection:
        job.points_graph()
    if options.quantize == "int8":
        job.int8_graphs()
    return job.metadata()


def build_metadata(
    classifier,
    *,
    labels: list[str],
    views: list[list[float]],
    in_channels: int,
    image_size: int,
    radius: float,
    graphs: dict[str, Any],
    checks: dict[str, Any],
    options: ExportOptions,
    extra_meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The content of c2p_export.json (see clip2point.export.metadata for the folder layout)."""
    model_meta = dict(getattr(classifier, "meta", None) or {})
    read = model_meta.get("read") if isinstance(model_meta.get("read"), dict) else {}
    versions = _versions()
    meta: dict[str, Any] = {
        "format": md.FORMAT,
        "format_version": md.FORMAT_VERSION,
        "c2p_version": versions["c2p"],
        "versions": versions,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "labels": labels,
        "views": views,
        "num_views": len(views),
        "image_size": image_size,
        "radius": radius,
        "camera_distance": defaults.CAMERA_DISTANCE,
        "in_channels": in_channels,
        "normalisation": {
            "folded_first_conv": in_channels == 1,
            "depth_scale": defaults.DEPTH_SCALE,
            "background": defaults.BACKGROUND,
            "clip_mean": list(defaults.CLIP_MEAN),
            "clip_std": list(defaults.CLIP_STD),
            "input": (
                "normalised depth map (1 channel; CLIP mean/std folded into the first convolution)"
                if in_channels == 1
                else "depth map copied to 3 channels and normalised with CLIP mean/std"
            ),
        },
        "points": {
            "n_points": options.n_points,
            "up_axis": options.up or read.get("up") or defaults.UP_AXIS,
            "sampling": options.sampling or read.get("sampling") or "random",
            "preparation": "clip2point.io.read_cloud: sample, turn the up axis to +y, centre and scale into the unit sphere",
        },
        "precision": "int8" if options.quantize == "int8" else "float32",
        "opset": options.opset,
        "exporter": "torch.onnx.export(dynamo=True)",
        "graphs": graphs,
        "check": checks,
        "classifier_meta": model_meta,
    }
    # The identifiers a user looks for first, at the top level.
    for key in IDENTITY_KEYS:
        if key in model_meta:
            meta[key] = model_meta[key]
    depth_encoder = meta.get("depth_encoder")
    if depth_encoder and "depth_encoder_sha256" not in meta and Path(depth_encoder).is_file():
        from clip2point.models.encoders import sha256_file

        meta["depth_encoder_sha256"] = sha256_file(depth_encoder)
    templates = model_meta.get("templates")
    if templates:
        from clip2point.models.prompts import prompt_texts

        meta["prompts"] = dict(zip(labels, prompt_texts(labels, templates), strict=True))
    if extra_meta:
        meta.update(extra_meta)
    return meta
