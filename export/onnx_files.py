"""Operations on exported ONNX files: the checker, the self-description stamp, int8 quantisation.

Every graph carries its description in its metadata_props (`c2p.*` keys, see
`clip2point.export.metadata`) and passes `onnx.checker.check_model(full_check=True)`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from clip2point.errors import ModelError

from . import metadata as md


def first_line(e: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def check_onnx_file(path: str | Path) -> None:
    """`onnx.checker.check_model(full_check=True)` (graph, types and shape inference); ModelError when it fails."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:  # ValidationError, InferenceError, or a protobuf error
        raise ModelError(f"{Path(path).name}: the ONNX checker rejects the exported graph ({first_line(e)})") from e


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
        raise ModelError(f"{Path(dst).name}: int8 quantisation failed ({first_line(e)})") from e
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
