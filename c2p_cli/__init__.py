"""clip2point: CLIP as a zero-shot and few-shot point-cloud classifier (CLIP2Point, ICCV 2023).

The public API is imported lazily so that `import clip2point` (and `c2p --help`) stays light.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "load_classifier": "clip2point.models.classifier",
    "PointCloudClassifier": "clip2point.models.classifier",
    "DepthMapClassifier": "clip2point.models.classifier",
    "classify_points": "clip2point.api",
    "classify_files": "clip2point.api",
    "describe_run": "clip2point.run_spec",
    "RunSpec": "clip2point.run_spec",
    "load_run_classifier": "clip2point.models.resolve",
    "read_cloud": "clip2point.io",
    "prepare_cloud": "clip2point.io",
    "Cloud": "clip2point.io",
    "render_depth": "clip2point.kernels",
    "camera_bases": "clip2point.views",
    "FileResult": "clip2point.engine.batching",
    "Prediction": "clip2point.engine.batching",
    "gather_inputs": "clip2point.engine.inputs",
    "load_adapter_classifier": "clip2point.models.adapters",
    # The exporter's loader, named here so users find it; imported only when asked for.
    "load_exported_classifier": "clip2point.export.runtime",
}

__all__ = ["__version__", *_LAZY]


def __dir__() -> list[str]:
    """The public API (lazy attributes included), so that dir() and completion list it."""
    return sorted(set(globals()) | set(__all__))


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'clip2point' has no attribute {name!r}")
