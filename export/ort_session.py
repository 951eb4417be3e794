"""ONNX Runtime sessions of exported graphs, for both runners (the torch head of `c2p classify
--backend onnx` and the torch-free `python -m clip2point.export.run_onnx`).

A graph may be truncated, forged or not a graph at all (a pickle renamed .onnx, external data
named outside its folder): whatever ONNX Runtime raises while loading or running it becomes one
`CheckpointError` line naming the file, and logits that do not have one column per label are
refused rather than paired with the wrong names. numpy and the standard library only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from clip2point.errors import CheckpointError

from . import metadata as md


def _why(e: Exception, limit: int = 300) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    text = lines[0] if lines else type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_session(ort, path: str | Path, providers: list[str]):
    """An InferenceSession of `path` (ONNX Runtime's own log quiet below errors)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types (Fail, InvalidProtobuf, ...)
        raise CheckpointError(f"{path}: ONNX Runtime cannot load it ({_why(e)})") from None


def output_classes(session, path: str | Path) -> Any:
    """The class dimension of the graph's logits (an int, or a name when symbolic)."""
    outputs = session.get_outputs()
    shape = list(outputs[0].shape) if outputs else []
    if len(shape) != 2:
        raise CheckpointError(f"{path}: the graph's output is {shape or 'missing'}, not logits [batch, classes]")
    return shape[1]


def run(session, feeds: dict[str, np.ndarray], path: str | Path, labels_from: tuple[int, str] | None) -> np.ndarray:
    """The graph's logits for `feeds`; `labels_from` (number of labels, where they are described):
    the logits must have that many columns."""
    try:
        logits = session.run(None, feeds)[0]
    except Exception as e:
        raise CheckpointError(f"{path}: ONNX Runtime cannot run it ({_why(e)})") from None
    if labels_from is not None:
        if logits.ndim != 2:
            raise CheckpointError(f"{path}: the graph returned logits of shape {list(logits.shape)}, not [batch, classes]")
        md.check_labels_fit(labels_from[0], logits.shape[1], labels_from[1], path)
    return logits
