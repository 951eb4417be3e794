"""Where clip2point keeps caches (text features, few-shot feature caches)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """$C2P_CACHE_DIR, else $XDG_CACHE_HOME/clip2point, else ~/.cache/clip2point (not created)."""
    root = os.environ.get("C2P_CACHE_DIR")
    if root:
        return Path(root).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clip2point"


def cache_dir(sub: str | None = None) -> Path:
    """`cache_root()`, or its folder `sub`; created on demand."""
    base = cache_root()
    path = base / sub if sub else base
    path.mkdir(parents=True, exist_ok=True)
    return path
