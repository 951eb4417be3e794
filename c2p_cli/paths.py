"""Where clip2point keeps caches (text features, few-shot feature caches)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(sub: str | None = None) -> Path:
    """$C2P_CACHE_DIR, else $XDG_CACHE_HOME/clip2point, else ~/.cache/clip2point; created on demand."""
    root = os.environ.get("C2P_CACHE_DIR")
    if root:
        base = Path(root)
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "clip2point"
    path = base / sub if sub else base
    path.mkdir(parents=True, exist_ok=True)
    return path
