"""classifier.onnx -> TensorRT 10 engine (FP16), checked against ONNX Runtime when built.

Written against TensorRT 10's Python API (name-based I/O tensors, `build_serialized_network`,
`execute_async_v3`; networks are explicit-batch by default, so `create_network(0)`). TensorRT is
imported lazily: without it, or without a CUDA GPU, the caller gets one line saying so.

Engine: FP16 kernels allowed (`BuilderFlag.FP16`; inputs and outputs stay float32), one
optimisation profile over the batch (min 1, opt, max = --max-batch) with the views, channels and
image size fixed by the ONNX graph, a workspace limit, and a timing cache kept beside the engine
(`timing.cache`) and reused by later builds, which then skip most kernel timing. INT8 is out of
scope.

Check: the engine and ONNX Runtime (CPU provider) run the same random and synthetic depth maps;
FP16 allows a looser tolerance than the ONNX check: max |diff| <= 1e-2 * max(1, max |logits|)
and the same argmax except near ties (see clip2point.export.parity.compare_logits).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from clip2point.errors import BackendUnavailableError, CheckpointError, ModelError, UsageError
from clip2point.store.atomic import atomic_write_bytes

from . import metadata as md
from .graph_inputs import check_depth

TRT_RTOL = 1e-2
DEFAULT_WORKSPACE_GIB = 4.0
INSTALL_HINT = (
    "TensorRT is not installed: pip install tensorrt (from NVIDIA's index) on a machine with an NVIDIA GPU; "
    "the ONNX Runtime backend (c2p: --backend onnx) works without it"
)

log = logging.getLogger("c2p.tensorrt")


def import_tensorrt():
    """The `tensorrt` module (version 10 or later), or BackendUnavailableError in one line."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise BackendUnavailableError(INSTALL_HINT) from e
    version = str(getattr(trt, "__version__", "0"))
    try:
        major = int(version.split(".")[0])
    except ValueError:
        major = 0
    if major < 10:
        raise BackendUnavailableError(f"TensorRT {version} is too old: this exporter needs TensorRT 10 or later (pip install -U tensorrt)")
    return trt


def require_cuda(device: Any = "cuda"):
    """A CUDA torch.device, or BackendUnavailableError in one line when there is no usable GPU."""
    if not torch.cuda.is_available():
        raise BackendUnavailableError(
            f"TensorRT needs an NVIDIA GPU with CUDA, and torch {torch.__version__} sees none here "
            f"(built for CUDA {torch.version.cuda or 'none'}); use the ONNX Runtime backend (c2p: --backend onnx)"
        )
    dev = torch.device("cuda" if str(device) in ("auto", "cpu") else device)
    if dev.type != "cuda":
        raise BackendUnavailableError(f"TensorRT runs on CUDA devices only, not {dev}")
    return dev


def _make_logger(trt):
    """A TensorRT logger that forwards to Python logging and keeps the errors for our messages."""

    class _Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors.append(str(msg))
                log.error("TensorRT: %s", msg)
            elif severity == trt.ILogger.Severity.WARNING:
                log.warning("TensorRT: %s", msg)
            else:
                log.debug("TensorRT: %s", msg)

    return _Logger()


def profile_shapes(fixed: tuple[int, ...], max_batch: int, opt_batch: int | None = None) -> dict[str, list[int]]:
    """min / opt / max shapes of the depth input: batch from `profile_batches`, the rest `fixed` (V, C, S, S)."""
    if any(int(d) < 1 for d in fixed):
        raise ModelError(f"only the batch of the depth input may be dynamic, got the other dimensions {list(fixed)}")
    lo, opt, hi = md.profile_batches(max_batch, opt_batch)
    rest = [int(d) for d in fixed]
    return {"min": [lo, *rest], "opt": [opt, *rest], "max": [hi, *rest]}


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    max_batch: int,
    opt_batch: int | None = None,
    fp16: bool = True,
    workspace_gib: float = DEFAULT_WORKSPACE_GIB,
    timing_cache: str | Path | None = None,
) -> dict[str, Any]:
    """Build and write a serialised engine from `onnx_path`; returns the `tensorrt` metadata section.

    Raises BackendUnavailableError (no TensorRT / GPU) or ModelError (the parser or the builder
    failed, with TensorRT's first error message).
    """
    trt = import_tensorrt()
    require_cuda()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    logger = _make_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)] or logger.errors
        raise ModelError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors[0] if errors else 'no reason given'}")
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    depth = next((t for t in inputs if t.name == md.DEPTH_INPUT), None)
    if depth is None:
        raise ModelError(f"{onnx_path}: no input named {md.DEPTH_INPUT!r} (inputs: {[t.name for t in inputs]})")
    shapes = profile_shapes(tuple(depth.shape)[1:], max_batch, opt_batch)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    profile.set_shape(md.DEPTH_INPUT, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)

    cache_path = Path(timing_cache) if timing_cache is not None else None
    cache_reused = _attach_timing_cache(config, cache_path)

    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        reason = logger.errors[0] if logger.errors else "no reason given"
        raise ModelError(f"{onnx_path}: TensorRT could not build an engine: {reason}")
    atomic_write_bytes(engine_path, bytes(serialized))
    cache_saved = _save_timing_cache(config, cache_path)
    return {
        "version": str(trt.__version__),
        "engine_file": engine_path.name,
        "engine_bytes": engine_path.stat().st_size,
        "precision": "fp16" if fp16 else "fp32",
        "io_dtype": "float32",
        "profile": shapes,
        "workspace_gib": workspace_gib,
        "timing_cache": cache_path.name if cache_saved else None,
        "timing_cache_reused": cache_reused,
        "build_seconds": round(time.perf_counter() - started, 2),
    }


def _attach_timing_cache(config, cache_path: Path | None) -> bool:
    """Give the builder the timing cache at `cache_path` (or an empty one); True when the file was reused.

    The cache only saves build time: a file TensorRT rejects (another version, another GPU, a
    truncated write) is deleted and the build starts from an empty cache.
    """
    data = b""
    if cache_path is not None and cache_path.is_file():
        data = cache_path.read_bytes()
    cache = None
    if data:
        try:
            cache = config.create_timing_cache(data)
            if cache is None or config.set_timing_cache(cache, False) is False:
                cache = None
        except Exception:  # TensorRT raises its own types (TypeError, RuntimeError) for a bad blob
            cache = None
        if cache is None:
            cache_path.unlink(missing_ok=True)
    if cache is None:
        cache = config.create_timing_cache(b"")
        if cache is not None:
            config.set_timing_cache(cache, False)
        return False
    return True


def _save_timing_cache(config, cache_path: Path | None) -> bool:
    """Write the builder's timing cache to `cache_path` after a build; False (and nothing written) when there is none."""
    if cache_path is None:
        return False
    try:
        cache = config.get_timing_cache()
        data = bytes(cache.serialize()) if cache is not None else b""
    except Exception:  # a cache TensorRT cannot serialise must not fail a build that succeeded
        data = b""
    if not data:
        cache_path.unlink(missing_ok=True)
        return False
    atomic_write_bytes(cache_path, data)
    return True


def load_engine(engine_path: str | Path, device):
    """(tensorrt module, runtime, deserialised ICudaEngine) on `device`; errors in one line.

    The runtime is returned so that its owner keeps it alive as long as the engine.
    """
    trt = import_tensorrt()
    path = Path(engine_path)
    if not path.is_file():
        raise CheckpointError(f"{path}: not found (build it with c2p export --trt)")
    logger = _make_logger(trt)
    with torch.cuda.device(device):
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        reason = logger.errors[0] if logger.errors else "built by another TensorRT version or for another GPU?"
        raise CheckpointError(f"{path}: TensorRT cannot load this engine ({reason}); rebuild it with c2p export --trt")
    return trt, runtime, engine


class TensorRTHead:
    """depth -> logits through a TensorRT 10 engine, on CUDA tensors (no host copies).

    Inputs and outputs stay in torch's CUDA memory: the engine reads the depth tensor's device
    pointer and writes into a torch tensor, on torch's current stream, so no synchronisation is
    needed before torch uses the logits. Batches larger than the engine profile's maximum run in
    chunks.
    """

    def __init__(self, engine_path: str | Path, device: torch.device | str = "cuda"):
        self.device = require_cuda(device)
        self.path = Path(engine_path)
        self.trt, self._runtime, self.engine = load_engine(self.path, self.device)
        trt = self.trt
        # TensorRT allocates the context's memory on the current CUDA device, which need not be ours.
        with torch.cuda.device(self.device):
            self.context = self.engine.create_execution_context()
        if self.context is None:
            raise BackendUnavailableError(f"{self.path}: TensorRT could not create an execution context (out of GPU memory?)")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        if md.DEPTH_INPUT not in names or md.LOGITS_OUTPUT not in names:
            raise CheckpointError(f"{self.path}: engine tensors {names} lack {md.DEPTH_INPUT!r} / {md.LOGITS_OUTPUT!r}")
        if self.engine.get_tensor_mode(md.DEPTH_INPUT) != trt.TensorIOMode.INPUT:
            raise CheckpointError(f"{self.path}: {md.DEPTH_INPUT!r} is not an input of the engine")
        min_shape, _opt, max_shape = self.engine.get_tensor_profile_shape(md.DEPTH_INPUT, 0)
        self.min_batch, self.max_batch = int(min_shape[0]), int(max_shape[0])
        self.input_shape = ["batch", *[int(d) for d in tuple(max_shape)[1:]]]
        self.num_classes = int(tuple(self.engine.get_tensor_shape(md.LOGITS_OUTPUT))[-1])

    def _run(self, chunk: torch.Tensor) -> torch.Tensor:
        out = torch.empty((chunk.shape[0], self.num_classes), dtype=torch.float32, device=self.device)
        ctx = self.context
        if not ctx.set_input_shape(md.DEPTH_INPUT, tuple(chunk.shape)):
            raise UsageError(f"{self.path}: the engine does not accept input shape {list(chunk.shape)}")
        ctx.set_tensor_address(md.DEPTH_INPUT, chunk.data_ptr())
        ctx.set_tensor_address(md.LOGITS_OUTPUT, out.data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise BackendUnavailableError(f"{self.path}: TensorRT execution failed (see TensorRT's log above)")
        return out

    def __call__(self, depth: torch.Tensor) -> torch.Tensor:
        check_depth(depth, self.input_shape, str(self.path))
        x = depth.detach().to(self.device, torch.float32).contiguous()
        # The engine and its context live on self.device; enqueueing from another current device is invalid.
        with torch.cuda.device(self.device):
            outs = [self._run(x[i : i + self.max_batch]) for i in range(0, x.shape[0], self.max_batch)]
        logits = outs[0] if len(outs) == 1 else torch.cat(outs)
        return logits.to(depth.device)


def check_engine(folder: str | Path, meta: dict[str, Any], *, rtol: float = TRT_RTOL, batch: int = 4, seed: int = 0):
    """Compare the engine with ONNX Runtime (CPU provider, the reference) on random and synthetic depth maps."""
    from .parity import compare_logits, cpu_session, random_depth_maps, run_session, synthetic_depth_maps

    folder = Path(folder)
    device = require_cuda()
    head = TensorRTHead(folder / md.ENGINE_FILE, device)
    session = cpu_session(folder / md.CLASSIFIER_ONNX)
    views, channels, size = md.views_from_meta(meta), int(meta["in_channels"]), int(meta["image_size"])
    batch = max(1, min(batch, head.max_batch))
    inputs = {
        "random depth": random_depth_maps(batch, len(views), channels, size, seed=seed),
        "synthetic depth": synthetic_depth_maps(batch, views, channels, size, float(meta["radius"]), seed=seed),
    }
    reports = []
    with torch.inference_mode():
        for name, maps in inputs.items():
            reference = run_session(session, {md.DEPTH_INPUT: maps})
            candidate = head(maps.to(device)).float().cpu().numpy()
            reports.append(compare_logits(reference, candidate, inputs=name, rtol=rtol))
    return reports


def build_and_check(
    folder: str | Path,
    *,
    max_batch: int,
    opt_batch: int | None = None,
    workspace_gib: float = DEFAULT_WORKSPACE_GIB,
    check: bool = True,
    rtol: float = TRT_RTOL,
) -> dict[str, Any]:
    """Build `folder`/classifier.engine from `folder`/classifier.onnx, check it, and record both in c2p_export.json.

    Returns the updated metadata; raises ExportCheckError (after recording the measurement) when
    the engine's logits differ from ONNX Runtime's by more than the tolerance.
    """
    from .parity import raise_if_failed, summarise

    folder = Path(folder)
    meta = md.read_metadata(folder)
    onnx_path = md.graph_path(folder, meta, "classifier")
    info = build_engine(
        onnx_path,
        folder / md.ENGINE_FILE,
        max_batch=max_batch,
        opt_batch=opt_batch,
        workspace_gib=workspace_gib,
        timing_cache=folder / md.TIMING_CACHE_FILE,
    )
    meta["tensorrt"] = info
    meta["graphs"]["engine"] = {"file": md.ENGINE_FILE, "bytes": info["engine_bytes"], "built_from": onnx_path.name}
    if check:
        reports = check_engine(folder, meta, rtol=rtol)
        summary = summarise(reports)
        summary["reference"] = "onnxruntime CPUExecutionProvider"
        summary["rule"] = f"max |engine - onnxruntime| <= {rtol:g} * max(1, max |logits|), same argmax except near ties"
        info["check"] = summary
        md.write_metadata(folder, meta)
        raise_if_failed(md.ENGINE_FILE, reports, reference="ONNX Runtime", candidate="the TensorRT engine")
    md.write_metadata(folder, meta)
    return meta
