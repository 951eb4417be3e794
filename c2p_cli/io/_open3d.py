"""open3d, imported lazily, for the formats no numpy parser here reads."""

from __future__ import annotations

from ._common import _ParseError


def _import_open3d(what: str):
    try:
        import open3d as o3d
    except ImportError:
        raise _ParseError(f"reading {what} needs open3d (pip install open3d)") from None
    return o3d


def _quiet_open3d(o3d):
    """open3d prints its own coloured warnings to stdout on bad files; we report errors ourselves."""
    return o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error)
