"""clip2point: CLIP as a zero-shot and few-shot point-cloud classifier (CLIP2Point, ICCV 2023).

The public API is imported lazily so that `import c2p_cli` (and `c2p --help`) stays light.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "load_classifier": "c2p_cli.classifier",
    "PointCloudClassifier": "c2p_cli.classifier",
    "DepthMapClassifier": "c2p_cli.classifier",
    "classify_points": "c2p_cli.api",
    "classify_files": "c2p_cli.api",
    "read_cloud": "c2p_cli.io",
    "render_depth": "kernels",
    "camera_bases": "c2p_cli.views",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'c2p_cli' has no attribute {name!r}")
