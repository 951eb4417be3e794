"""Heads that run exported graphs, and the classifier `c2p classify --backend onnx|trt` uses.

Both heads are callables depth [B, V, C, S, S] -> logits [B, K] (torch tensors in, torch tensors
out, on the input's device), so they drop into `classifier.PointCloudClassifier` in place of the
torch module: rendering stays in torch (Triton on CUDA), only the encoder graph changes. Results
are therefore the same objects, in the same format, as the torch backend's.

The export folder decides labels, views, channels, image size and splat radius: they are baked
into the graphs, so `load_exported_classifier` takes them from `c2p_export.json` and nothing else
(the CLI refuses --labels / --label-set / --adapter with --engine, and its --views is not used).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from clip2point.errors import BackendUnavailableError, CheckpointError, Opt, OptionError, UsageError

from . import metadata as md
from .graph_inputs import check_depth
from .ort_session import load_session, output_classes, run

BACKENDS = ("onnx", "trt")


def _ort():
    try:
        import onnxruntime
    except ImportError as e:
        raise BackendUnavailableError(
            "onnxruntime is not installed: pip install onnxruntime (or onnxruntime-gpu for CUDA), "
            "or pip install 'clip2point[onnx]'"
        ) from e
    return onnxruntime


def ort_providers(device: torch.device | str | None = None) -> list[str]:
    """CUDA provider first when this onnxruntime has it (and `device` is not the CPU), else CPU only."""
    ort = _ort()
    wants_cpu = device is not None and torch.device(device).type == "cpu"
    if not wants_cpu and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxRuntimeHead:
    """depth -> logits through `classifier.onnx` with ONNX Runtime (CUDA provider when present, else CPU)."""

    def __init__(self, path: str | Path, device: torch.device | str | None = None, providers: list[str] | None = None,
                 check_inputs: bool = True):
        ort = _ort()
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: not found")
        self.providers = providers or ort_providers(device)
        self.session = load_session(ort, self.path, self.providers)
        # The providers the session really got (a CUDA provider that fails to load falls back to CPU).
        self.active_providers = self.session.get_providers()
        self.input_shape: list[Any] = []
        self.num_classes = output_classes(self.session, self.path)
        self.labels_from: tuple[int, str] | None = None  # (how many labels, where described): expect_labels
        if check_inputs:
            self.check_inputs()

    def expect_labels(self, labels: list[str], described_in: str | Path) -> None:
        """The graph must output one logit per label (checked now, and per batch when symbolic)."""
        md.check_labels_fit(len(labels), self.num_classes, described_in, self.path)
        self.labels_from = (len(labels), str(described_in))

    def check_inputs(self) -> None:
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].name != md.DEPTH_INPUT:
            raise CheckpointError(f"{self.path}: expected one input named {md.DEPTH_INPUT!r}, got {[i.name for i in inputs]}")
        self.input_shape = list(inputs[0].shape)

    def props(self) -> dict[str, str]:
        """The graph's metadata_props (its c2p.* self-description)."""
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def __call__(self, depth: torch.Tensor) -> torch.Tensor:
        check_depth(depth, self.input_shape, str(self.path))
        array = depth.detach().to("cpu", torch.float32).contiguous().numpy()
        logits = run(self.session, {md.DEPTH_INPUT: array}, self.path, self.labels_from)
        return torch.from_numpy(np.ascontiguousarray(logits)).to(depth.device)


def _from_onnx_file(path: Path, device: str, precision: str | None):
    """(head, meta) of a lone classifier .onnx file, described by its own metadata_props."""
    from clip2point.distributed import resolve_device

    torch_device = resolve_device(device)
    head = OnnxRuntimeHead(path, torch_device, check_inputs=False)
    meta = md.meta_from_props(head.props(), path)
    key = next(iter(meta["graphs"]))
    if not key.startswith("classifier"):
        raise UsageError(f"{path}: a points graph (points -> logits); run it with python -m clip2point.export.run_onnx, "
                         f"or give classifier.onnx here")  # fmt: skip
    if precision and meta["precision"] != precision:
        raise UsageError(f"{path}: a {meta['precision']} graph, not {precision}")
    md.refuse_failed_check(path.parent, meta, key)
    head.check_inputs()
    head.expect_labels(meta["labels"], f"{path}: ONNX metadata {md.PROP_PREFIX}labels")
    return head, meta, key, torch_device


def load_exported_classifier(
    folder: str | Path,
    backend: str = "onnx",
    device: str = "auto",
    render_backend: str = "auto",
    precision: str | None = None,
):
    """A `classifier.PointCloudClassifier` whose head runs an exported graph.

    `folder`: a `c2p export` folder, or (ONNX Runtime only) a lone classifier .onnx file, which
    describes itself in its metadata_props. `backend`: "onnx" (classifier.onnx, or its int8 version,
    with ONNX Runtime) or "trt" (classifier.engine, needs TensorRT and a CUDA GPU). `precision`:
    "float32" or "int8" for ONNX Runtime; None takes the export's own (int8 after `--quantize int8`).
    Labels, views, channels, image size and radius come from the export's metadata; `meta` says
    which export, graph and runtime made the results.
    """
    from clip2point.distributed import resolve_device
    from clip2point.models.classifier import PointCloudClassifier

    if backend not in BACKENDS:
        raise OptionError(Opt("backend"), f" for an export folder must be one of {', '.join(BACKENDS)}, got {backend!r}")
    folder = Path(folder)
    if folder.is_file():
        if backend != "onnx":
            raise UsageError(f"{folder}: a TensorRT engine is used from its export folder, not from a single file")
        head, meta, key, torch_device = _from_onnx_file(folder, device, precision)
        return _classifier(PointCloudClassifier, head, meta, folder, torch_device, render_backend,
                           {"backend": "onnx", "onnx_file": str(head.path), "precision": meta["precision"],
                            "providers": head.active_providers})  # fmt: skip
    meta = md.read_metadata(folder)
    # The engine is built from classifier.onnx: a failed ONNX check disqualifies both backends.
    md.refuse_failed_check(folder, meta, "classifier")
    if backend == "trt":
        from .tensorrt import TensorRTHead, import_tensorrt, require_cuda

        md.refuse_failed_check(folder, meta, "engine")
        import_tensorrt()  # "not installed" is the more useful message when neither TensorRT nor a GPU is here
        torch_device = require_cuda(device if device != "auto" else "cuda")
        head = TensorRTHead(md.graph_path(folder, meta, "engine"), torch_device)
        md.check_labels_fit(len(meta["labels"]), head.num_classes, folder / md.METADATA_FILE, head.path)
        runtime = {"backend": "trt", "engine_file": str(head.path), "tensorrt": meta.get("tensorrt", {}).get("version")}
    else:
        key = md.graph_key("classifier", precision, meta)
        md.refuse_failed_check(folder, meta, key)
        torch_device = resolve_device(device)
        head = OnnxRuntimeHead(md.graph_path(folder, meta, key), torch_device)
        head.expect_labels(meta["labels"], folder / md.METADATA_FILE)
        runtime = {"backend": "onnx", "onnx_file": str(head.path), "precision": "int8" if key.endswith(md.INT8_SUFFIX) else "float32",
                   "providers": head.active_providers}  # fmt: skip
    return _classifier(PointCloudClassifier, head, meta, folder, torch_device, render_backend, runtime)


def _classifier(cls, head, meta, folder, torch_device, render_backend, runtime):
    info = {
        "export": str(folder),
        **{k: meta[k] for k in ("model", "pretrained", "weights_id", "depth_encoder", "templates", "adapter") if k in meta},
        "views": meta["views"],
        "image_size": meta["image_size"],
        "radius": meta["radius"],
        "folded": meta["in_channels"] == 1,
        "c2p_export_version": meta.get("c2p_version"),
        **runtime,
    }
    points = meta.get("points") or {}
    if meta.get("adapter") and points:
        # files are read the way the adapter's shapes were (classify merges these with its options)
        info["read"] = {"n_points": points.get("n_points"), "sampling": points.get("sampling", "random"),
                        "up": points.get("up_axis", "z")}  # fmt: skip
    return cls(
        head,
        meta["labels"],
        md.views_from_meta(meta),
        in_channels=int(meta["in_channels"]),
        device=torch_device,
        image_size=int(meta["image_size"]),
        radius=float(meta["radius"]),
        render_backend=render_backend,
        meta=info,
    )
