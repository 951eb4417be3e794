"""One way from a run's description to a classifier, whatever brings it.

`load_run_classifier(spec)` reads `spec.source` (clip2point.run_spec.RunSpec) and builds:

| source              | what                                          | built by                                  |
|---------------------|-----------------------------------------------|-------------------------------------------|
| zero-shot           | CLIP (+ a depth encoder) and the labels' text | `classifier.load_classifier`              |
| adapter run         | a `c2p fewshot` run folder (`which` weights)  | `adapters.load_adapter_classifier`        |
| adapter checkpoint  | the official CLIP2Point DPA checkpoint (.pth) | `adapters.load_adapter_classifier`        |
| export              | a `c2p export` folder or a lone .onnx, run by | `clip2point.load_exported_classifier`     |
|                     | ONNX Runtime (float32 / int8) or TensorRT     |                                           |

The options each source refuses are checked earlier, once, by `clip2point.run_spec` (its
`CLASHES`); here every source gets exactly the options that mean something to it. The exporter's
runtime is reached through the package's public door (`clip2point.load_exported_classifier`), so
the library core still imports nothing from `clip2point.export` by name.
"""

from __future__ import annotations

from collections.abc import Sequence

from .. import option_table
from ..run_spec import RunSpec


def load_run_classifier(spec: RunSpec, *, device=None, default_labels: Sequence[str] | None = None, fold: bool = True):
    """The classifier `spec` describes (a `classifier.PointCloudClassifier`), on `device` (default:
    `spec.device`). `default_labels`: the labels of a zero-shot run or of the official checkpoint
    when the spec names none (`c2p eval`: the dataset's classes). `fold`: fold CLIP's first
    convolution into one input channel (zero-shot only; exact up to float rounding)."""
    from ..distributed import resolve_device
    from ..engine.pipeline import check_precision, run_precision

    device = spec.device if device is None else str(device)
    torch_device = resolve_device(device)
    precision = run_precision(spec)
    if precision is not None:
        precision = check_precision(precision, torch_device.type, torch_model=spec.backend == "torch")
    classifier = _build(spec, device, default_labels, fold)
    if precision is not None and spec.backend == "torch":
        from .precision import apply_precision

        apply_precision(classifier, precision)  # once, here: classify, eval and few-shot share the encoder
    return classifier


def _build(spec: RunSpec, device: str, default_labels: Sequence[str] | None, fold: bool):
    labels = list(spec.labels) if spec.labels is not None else (list(default_labels) if default_labels is not None else None)
    templates = list(spec.templates) if spec.templates is not None else None
    source = spec.source
    if source == "export":
        import clip2point

        return clip2point.load_exported_classifier(spec.engine, backend=spec.backend, device=device,
                                                   precision=spec.graph_precision)  # fmt: skip
    if source in ("adapter run", "adapter checkpoint"):
        from .adapters import load_adapter_classifier

        if source == "adapter run":
            return load_adapter_classifier(spec.adapter, device=device, which=spec.which)
        return load_adapter_classifier(spec.adapter, device=device, labels=labels, templates=templates,
                                       model=spec.model, pretrained=spec.pretrained)  # fmt: skip
    from .classifier import load_classifier

    return load_classifier(
        labels=labels, model=spec.model, pretrained=spec.pretrained, depth_encoder=spec.depth_encoder,
        views=spec.views if spec.views is not None else option_table.default("views"), templates=templates, device=device, fold=fold,
    )
