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

Check. `check_against_torch` runs a graph with ONNX Runtime (CPU provider) and the torch module
on the same inputs and compares the logits. Tolerance: max |logits_ort - logits_torch| <= rtol *
max(1, max |logits_torch|) (rtol = 1e-3 by default: a thousandth of the largest logit, which for
CLIP-style logits is a thousandth of the logit scale), and the same argmax for every row, except
rows whose two best torch logits are within two tolerances of each other (a near tie, where
rounding may legitimately pick either).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from clip2point import defaults
from clip2point.errors import ExportCheckError, ModelError, Opt, OptionError, UsageError

from . import metadata as md

MIN_OPSET = 18
DEFAULT_OPSET = 18
DEFAULT_RTOL = 1e-3
# The batch of the example inputs given to the exporter: not 0 or 1, which torch.export
# specialises, so that the batch stays symbolic.
EXAMPLE_BATCH = 2
# Shape classes of clip2point.synth used as the "real" check inputs: varied silhouettes.
CHECK_SHAPES = ("chair", "mug", "torus", "table", "bottle", "cone")

# Keys of PointCloudClassifier.meta copied to the top level of c2p_export.json.
IDENTITY_KEYS = (
    "model", "pretrained", "weights_id", "weights", "depth_encoder", "depth_encoder_sha256", "templates",
    "adapter", "adapter_format", "which", "fusion",
)

log = logging.getLogger("c2p.export")


# ---------------------------------------------------------------------------------------------
# Comparisons
# ---------------------------------------------------------------------------------------------


@dataclass
class ParityReport:
    """How far a graph's logits are from torch's on one set of inputs."""

    inputs: str
    batch: int
    max_abs_diff: float
    max_rel_diff: float
    tolerance: float
    argmax_agreement: float
    near_ties: int
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return (
            f"{self.inputs} inputs (batch {self.batch}): max |diff| {self.max_abs_diff:.3g} "
            f"(tolerance {self.tolerance:.3g}), max rel diff {self.max_rel_diff:.3g}, "
            f"argmax agreement {self.argmax_agreement:.0%}"
        )


def compare_logits(reference: np.ndarray, candidate: np.ndarray, *, inputs: str, rtol: float = DEFAULT_RTOL) -> ParityReport:
    """Compare two [B, K] logit arrays under this module's tolerance rule (see the module docstring)."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        return ParityReport(inputs, int(ref.shape[0]) if ref.ndim else 0, float("inf"), float("inf"), 0.0, 0.0, 0, False)
    tolerance = rtol * max(1.0, float(np.abs(ref).max(initial=0.0)))
    diff = np.abs(ref - cand)
    max_abs = float(diff.max(initial=0.0)) if np.isfinite(cand).all() else float("inf")
    max_rel = float((diff / np.maximum(np.abs(ref), 1e-6)).max(initial=0.0)) if np.isfinite(max_abs) else float("inf")
    same = ref.argmax(axis=1) == cand.argmax(axis=1)
    if ref.shape[1] > 1:
        top2 = np.sort(ref, axis=1)[:, -2:]
        tie = (top2[:, 1] - top2[:, 0]) <= 2 * tolerance
    else:
        tie = np.zeros(len(ref), dtype=bool)
    passed = bool(max_abs <= tolerance and np.all(same | tie))
    return ParityReport(
        inputs=inputs,
        batch=int(ref.shape[0]),
        max_abs_diff=max_abs,
        max_rel_diff=max_rel,
        tolerance=float(tolerance),
        argmax_agreement=float(same.mean()) if len(same) else 1.0,
        near_ties=int(tie.sum()),
        passed=passed,
    )


def summarise(reports: Sequence[ParityReport]) -> dict[str, Any]:
    """The check section of c2p_export.json: worst case over all input sets, plus each set."""
    return {
        "passed": all(r.passed for r in reports),
        "rule": f"max |logits - torch| <= {DEFAULT_RTOL:g} * max(1, max |torch logits|), same argmax except near ties",
        "max_abs_diff": max((r.max_abs_diff for r in reports), default=0.0),
        "max_rel_diff": max((r.max_rel_diff for r in reports), default=0.0),
        "argmax_agreement": min((r.argmax_agreement for r in reports), default=1.0),
        "runs": [r.to_dict() for r in reports],
    }


# ---------------------------------------------------------------------------------------------
# Check inputs
# ---------------------------------------------------------------------------------------------


def random_depth_maps(batch: int, num_views: int, channels: int, image_size: int, seed: int = 0) -> torch.Tensor:
    """Depth maps with the renderer's value range: [0, 200/255] blobs on a 1.0 background.

    `channels=3` gives them as the unfolded encoder sees them (copied and CLIP-normalised).
    """
    g = torch.Generator().manual_seed(seed)
    depth = torch.rand(batch, num_views, 1, image_size, image_size, generator=g) * defaults.DEPTH_SCALE
    background = torch.rand(batch, num_views, 1, image_size, image_size, generator=g) < 0.7
    depth = torch.where(background, torch.full_like(depth, defaults.BACKGROUND), depth)
    if channels == 3:
        mean = torch.tensor(defaults.CLIP_MEAN).view(1, 1, 3, 1, 1)
        std = torch.tensor(defaults.CLIP_STD).view(1, 1, 3, 1, 1)
        depth = (depth.expand(-1, -1, 3, -1, -1) - mean) / std
    return depth.contiguous()


def synthetic_clouds(count: int, n_points: int = defaults.NUM_POINTS, seed: int = 0, ragged: bool = True):
    """Clouds of clip2point.synth shapes, prepared like `read_cloud` (z-up rotation, unit sphere).

    Returns (points [count, n_points, 3] float32 zero-padded, lengths [count] int64). With
    `ragged`, every other cloud is shorter, so that the padding path is exercised too.
    """
    from clip2point.io import normalize_unit_sphere
    from clip2point.synth import random_cloud
    from clip2point.views import apply_up_axis

    rng = np.random.default_rng(seed)
    points = np.zeros((count, n_points, 3), dtype=np.float32)
    lengths = np.zeros(count, dtype=np.int64)
    for i in range(count):
        n = n_points if not ragged or i % 2 == 0 else max(8, (n_points * 3) // 4)
        cloud = random_cloud(CHECK_SHAPES[i % len(CHECK_SHAPES)], rng, n)
        points[i, :n] = normalize_unit_sphere(apply_up_axis(cloud, defaults.UP_AXIS))
        lengths[i] = n
    return torch.from_numpy(points), torch.from_numpy(lengths)


def synthetic_depth_maps(
    count: int, views, channels: int, image_size: int, radius: float, n_points: int = defaults.NUM_POINTS, seed: int = 0
) -> torch.Tensor:
    """Depth maps rendered (torch reference renderer) from `synthetic_clouds`."""
    from clip2point.kernels import render_depth
    from clip2point.views import camera_bases

    points, lengths = synthetic_clouds(count, n_points, seed)
    return render_depth(
        points, camera_bases(views), lengths=lengths, image_size=image_size, radius=radius, channels=channels, backend="torch"
    )


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


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


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
        raise ModelError(f"{path.name}: ONNX export failed ({_first_line(e)}); C2P_DEBUG=1 shows the traceback") from e


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
# Check
# ---------------------------------------------------------------------------------------------


def cpu_session(path: str | Path):
    """An ONNX Runtime session on the CPU provider (the reference run of the check)."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        from clip2point.errors import BackendUnavailableError

        raise BackendUnavailableError("onnxruntime is not installed: pip install 'clip2point[onnx]'") from e
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def run_session(session, feeds: dict[str, torch.Tensor | np.ndarray]) -> np.ndarray:
    """The first output of `session` for named inputs (torch tensors are moved to CPU numpy)."""
    arrays = {k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)) for k, v in feeds.items()}
    return session.run(None, arrays)[0]


@torch.no_grad()
def check_against_torch(
    session,
    torch_fn: Callable[..., torch.Tensor],
    feeds: dict[str, torch.Tensor],
    *,
    inputs: str,
    rtol: float = DEFAULT_RTOL,
) -> ParityReport:
    """Run `session` and `torch_fn(*feeds.values())` on the same inputs and compare their logits."""
    reference = torch_fn(*feeds.values()).float().cpu().numpy()
    candidate = run_session(session, feeds)
    return compare_logits(reference, candidate, inputs=inputs, rtol=rtol)


def raise_if_failed(
    graph: str, reports: Sequence[ParityReport], *, reference: str = "torch", candidate: str = "ONNX Runtime"
) -> None:
    """ExportCheckError naming the graph and the worst measured difference when any report failed."""
    failed = [r for r in reports if not r.passed]
    if failed:
        worst = max(failed, key=lambda r: r.max_abs_diff)
        raise ExportCheckError(f"{graph}: {candidate} differs from {reference} on {worst.describe()}")


# ---------------------------------------------------------------------------------------------
# Self-description, the ONNX checker, int8
# ---------------------------------------------------------------------------------------------


def check_onnx_file(path: str | Path) -> None:
    """`onnx.checker.check_model(full_check=True)` (graph, types and shape inference); ModelError when it fails."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:  # ValidationError, InferenceError, or a protobuf error
        raise ModelError(f"{Path(path).name}: the ONNX checker rejects the exported graph ({_first_line(e)})") from e


def stamp_graph(path: str | Path, props: dict[str, str]) -> None:
    """Write `props` into the graph's metadata_props (replacing earlier c2p.* keys, keeping the
    others), atomically, then run the full ONNX checker on the file."""
    import onnx

    from clip2point.store.atomic import atomic_write_bytes

    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    kept = {p.key: p.value for p in model.metadata_props if not p.key.startswith(md.PROP_PREFIX)}
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {**kept, **props})
    model.doc_string = "clip2point classifier; c2p.* metadata_props describe its labels, views and input preparation"
    atomic_write_bytes(path, model.SerializeToString())
    check_onnx_file(path)


INT8_OP_TYPES = ("MatMul", "Gemm")


def quantize_int8(src: str | Path, dst: str | Path) -> dict[str, Any]:
    """Dynamic int8 quantisation of `src` with ONNX Runtime's tools (weights of MatMul/Gemm in int8,
    activations quantised per batch at run time); everything else, the renderer included, stays float32.

    Convolutions are left in float32: ONNX Runtime's CPU provider has no ConvInteger kernel for
    int8 weights, and the patch embedding is a small part of a ViT's work.
    """
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as e:
        from clip2point.errors import BackendUnavailableError

        raise BackendUnavailableError("int8 export needs onnxruntime's quantization tools: pip install 'clip2point[onnx]'") from e
    import onnx

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # it logs a "consider pre-processing" warning on the root logger every time
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=list(INT8_OP_TYPES))
    except Exception as e:
        raise ModelError(f"{Path(dst).name}: int8 quantisation failed ({_first_line(e)})") from e
    finally:
        root.setLevel(level)
    model = onnx.load(str(dst), load_external_data=False)
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return {
        "method": "onnxruntime.quantization.quantize_dynamic",
        "weight_type": "QInt8",
        "op_types": list(INT8_OP_TYPES),
        "integer_nodes": counts.get("MatMulInteger", 0) + counts.get("ConvInteger", 0),
        "float_matmuls_left": counts.get("MatMul", 0) + counts.get("Gemm", 0),
    }


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.asarray(x, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def compare_int8(reference: np.ndarray, candidate: np.ndarray, *, inputs: str) -> dict[str, Any]:
    """How far int8 logits are from torch's. Int8 is not held to the float tolerance: it passes
    when its logits have the right shape and are finite; agreement and differences are recorded."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    ok = ref.shape == cand.shape and bool(np.isfinite(cand).all())
    if not ok:
        return {"inputs": inputs, "batch": int(ref.shape[0]) if ref.ndim else 0, "max_abs_diff": float("inf"),
                "max_prob_diff": float("inf"), "argmax_agreement": 0.0, "passed": False}  # fmt: skip
    return {
        "inputs": inputs,
        "batch": int(ref.shape[0]),
        "max_abs_diff": float(np.abs(ref - cand).max(initial=0.0)),
        "max_prob_diff": float(np.abs(_softmax(ref) - _softmax(cand)).max(initial=0.0)),
        "argmax_agreement": float((ref.argmax(axis=1) == cand.argmax(axis=1)).mean()) if len(ref) else 1.0,
        "passed": True,
    }


def summarise_int8(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        "passed": all(r["passed"] for r in runs),
        "rule": "int8: finite logits of the right shape; agreement with torch recorded, not held to the float tolerance",
        "max_abs_diff": max((r["max_abs_diff"] for r in runs), default=0.0),
        "max_prob_diff": max((r["max_prob_diff"] for r in runs), default=0.0),
        "argmax_agreement": min((r["argmax_agreement"] for r in runs), default=1.0),
        "runs": list(runs),
    }


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
    """State of one export: the folder, the graphs written so far, their checks, and the metadata."""

    def __init__(self, classifier, out: Path, head: nn.Module, options: ExportOptions, extra_meta):
        self.classifier = classifier
        self.out = out
        self.head = head
        self.options = options
        self.extra_meta = extra_meta
        self.labels = list(classifier.labels)
        self.views = _as_views(classifier.views)
        self.in_channels = int(classifier.in_channels)
        self.image_size = int(getattr(classifier, "image_size", defaults.IMAGE_SIZE))
        self.radius = float(getattr(classifier, "radius", defaults.POINT_RADIUS))
        self.graphs: dict[str, Any] = {}
        self.checks: dict[str, Any] = {}

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
    step = on_step or (lambda _msg: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    head = getattr(classifier, "head", None)
    if not isinstance(head, nn.Module):
        raise UsageError("export needs a classifier whose head is a torch module (not an exported runtime)")
    # A CPU copy in eval mode: the check's torch reference runs where ONNX Runtime's CPU provider does.
    head = copy.deepcopy(head).cpu().eval()
    job = _Export(classifier, out, head, options, extra_meta)
    num_views, in_channels, image_size, radius = len(job.views), job.in_channels, job.image_size, job.radius

    # Files left by an earlier export would no longer match this one.
    (out / md.ENGINE_FILE).unlink(missing_ok=True)
    for stale in (md.CLASSIFIER_INT8_ONNX, md.POINTS_INT8_ONNX) + (() if options.with_projection else (md.POINTS_ONNX,)):
        (out / stale).unlink(missing_ok=True)

    step("exporting classifier.onnx")
    started = time.perf_counter()
    shapes = export_depth_graph(
        head, out / md.CLASSIFIER_ONNX, num_views=num_views, in_channels=in_channels, image_size=image_size, opset=options.opset
    )
    depth_feeds: list[tuple[str, dict[str, torch.Tensor]]] = []
    if options.check:
        step("checking classifier.onnx against torch")
        session = cpu_session(out / md.CLASSIFIER_ONNX)
        random_maps = random_depth_maps(options.check_batch, num_views, in_channels, image_size, seed=options.seed)
        real_maps = synthetic_depth_maps(
            options.check_batch + 1, job.views, in_channels, image_size, radius, n_points=options.check_points, seed=options.seed
        )
        depth_feeds = [("random depth", {md.DEPTH_INPUT: random_maps}), ("synthetic depth", {md.DEPTH_INPUT: real_maps})]
        reports = [check_against_torch(session, head, feeds, inputs=name, rtol=options.rtol) for name, feeds in depth_feeds]
        del session
        job.checks["classifier"] = summarise(reports)
        job.finish("classifier", md.CLASSIFIER_ONNX, shapes, started)
        raise_if_failed(md.CLASSIFIER_ONNX, reports)
    else:
        job.finish("classifier", md.CLASSIFIER_ONNX, shapes, started)

    points_feeds: list[tuple[str, dict[str, torch.Tensor]]] = []
    pipeline = None
    if options.with_projection:
        step("exporting points_classifier.onnx (renderer traced in)")
        started = time.perf_counter()
        shapes = export_points_graph(
            head, out / md.POINTS_ONNX, views=job.views, in_channels=in_channels, image_size=image_size, radius=radius,
            opset=options.opset,
        )
        if options.check:
            step("checking points_classifier.onnx against the torch pipeline")
            session = cpu_session(out / md.POINTS_ONNX)
            pipeline = PointsToLogits(head, job.views, in_channels=in_channels, image_size=image_size, radius=radius).eval()
            points, lengths = synthetic_clouds(options.check_batch + 1, options.check_points, seed=options.seed + 1)
            points_feeds = [("synthetic clouds", {md.POINTS_INPUT: points, md.LENGTHS_INPUT: lengths})]
            reports = [check_against_torch(session, pipeline, feeds, inputs=name, rtol=options.rtol) for name, feeds in points_feeds]
            del session
            job.checks["points_classifier"] = summarise(reports)
            job.finish("points_classifier", md.POINTS_ONNX, shapes, started)
            raise_if_failed(md.POINTS_ONNX, reports)
        else:
            job.finish("points_classifier", md.POINTS_ONNX, shapes, started)

    if options.quantize == "int8":
        todo = [("classifier", md.CLASSIFIER_ONNX, md.CLASSIFIER_INT8_ONNX, head, depth_feeds)]
        if options.with_projection:
            todo.append(("points_classifier", md.POINTS_ONNX, md.POINTS_INT8_ONNX, pipeline, points_feeds))
        for key, src, dst, reference, feeds in todo:
            step(f"quantising {src} to int8 ({dst})")
            started = time.perf_counter()
            quant = quantize_int8(out / src, out / dst)
            if options.check and reference is not None:
                step(f"checking {dst} against torch")
                session = cpu_session(out / dst)
                with torch.no_grad():
                    runs = [compare_int8(reference(*f.values()).float().numpy(), run_session(session, f), inputs=name)
                            for name, f in feeds]  # fmt: skip
                del session
                job.checks[key + md.INT8_SUFFIX] = summarise_int8(runs)
            job.finish(key + md.INT8_SUFFIX, dst, job.graphs[key]["inputs"], started, {"quantization": quant})
            check = job.checks.get(key + md.INT8_SUFFIX)
            if check is not None and not check["passed"]:
                raise ExportCheckError(f"{dst}: int8 logits are not finite or have the wrong shape")
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
