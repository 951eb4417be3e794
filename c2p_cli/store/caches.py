"""The caches under `paths.cache_root()`: what they hold, how big they are, and clearing them.

Every cache is a folder of files that c2p recomputes when they are missing (text features of the
prompts, few-shot per-view features, pre-training image features), so removing any of them only
costs time. Standard library only. Nothing here follows symbolic links: a link inside the cache is
counted and removed as a link, never as what it points to.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from .paths import cache_root

# What each known cache holds (other folders are listed as they are).
KNOWN = {
    "text_features": "text features of the label prompts, per model and template set",
    "features": "few-shot per-view features of the shots (c2p fewshot)",
    "pretrain_image_features": "image features of the pre-training renders (c2p pretrain)",
}
# Temporary files of atomic writes (clip2point.store.atomic) left by a killed process.
TEMP_SUFFIX = ".tmp"


@dataclass
class CacheFile:
    path: Path
    size: int
    last_used: float  # the later of access and modification time, seconds since the epoch


@dataclass
class Cache:
    name: str
    path: Path
    description: str
    files: list[CacheFile] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def last_used(self) -> float | None:
        return max((f.last_used for f in self.files), default=None)

    def to_dict(self) -> dict:
        return {"name": self.name, "path": str(self.path), "description": self.description, "files": len(self.files),
                "bytes": self.size, "last_used": self.last_used}  # fmt: skip


def _files(folder: Path) -> list[CacheFile]:
    out = []
    for root, dirs, names in os.walk(folder, followlinks=False):
        for name in names + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            path = Path(root, name)
            try:
                st = path.lstat()
            except OSError:
                continue
            size = st.st_size if stat.S_ISREG(st.st_mode) else 0
            out.append(CacheFile(path, size, max(st.st_atime, st.st_mtime)))
    return out


def list_caches(root: str | Path | None = None) -> list[Cache]:
    """Every folder under the cache root (the known ones first), with its files; loose files as "(other)"."""
    root = Path(root) if root is not None else cache_root()
    if not root.is_dir():
        return []
    caches, loose = [], []
    for entry in sorted(root.iterdir(), key=lambda p: (p.name not in KNOWN, p.name)):
        if entry.is_dir() and not entry.is_symlink():
            caches.append(Cache(entry.name, entry, KNOWN.get(entry.name, ""), _files(entry)))
        else:
            try:
                st = entry.lstat()
            except OSError:
                continue
            loose.append(CacheFile(entry, st.st_size if stat.S_ISREG(st.st_mode) else 0, max(st.st_atime, st.st_mtime)))
    if loose:
        caches.append(Cache("(other)", root, "files directly in the cache folder", loose))
    return caches


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def remove_caches(names: list[str] | None, root: str | Path | None = None) -> list[Cache]:
    """Delete the named caches (None: every one); returns what was removed. Unknown names: UsageError."""
    caches = list_caches(root)
    by_name = {c.name: c for c in caches if c.name != "(other)"}
    if names is None:
        chosen = caches
    else:
        unknown = [n for n in names if n not in by_name]
        if unknown:
            have = ", ".join(by_name) or "none"
            raise UsageError(f"no cache named {', '.join(map(repr, unknown))} (caches here: {have})")
        chosen = [by_name[n] for n in dict.fromkeys(names)]
    for cache in chosen:
        if cache.name == "(other)":
            for f in cache.files:
                _remove(f.path)
        else:
            _remove(cache.path)
    return chosen


@dataclass
class PruneResult:
    removed: list[CacheFile]
    kept_bytes: int
    dry_run: bool

    @property
    def freed(self) -> int:
        return sum(f.size for f in self.removed)


def prune(
    older_than_days: float | None = None,
    max_bytes: int | None = None,
    *,
    root: str | Path | None = None,
    dry_run: bool = False,
    temp_grace_s: float = 3600.0,
    now: float | None = None,
) -> PruneResult:
    """Delete cache files unused for `older_than_days`, then the least recently used ones until the
    caches hold at most `max_bytes`; temporary files of interrupted writes older than
    `temp_grace_s` always go. `dry_run` only reports what would be removed."""
    if older_than_days is None and max_bytes is None:
        raise UsageError("say what to prune: an age (older_than_days) and/or a size limit (max_bytes)")
    now = time.time() if now is None else now
    files = sorted((f for c in list_caches(root) for f in c.files), key=lambda f: f.last_used)
    doomed: dict[Path, CacheFile] = {}
    for f in files:
        stale_temp = f.path.name.endswith(TEMP_SUFFIX) and now - f.last_used > temp_grace_s
        too_old = older_than_days is not None and now - f.last_used > older_than_days * 86400.0
        if stale_temp or too_old:
            doomed[f.path] = f
    if max_bytes is not None:
        total = sum(f.size for f in files if f.path not in doomed)
        for f in files:  # oldest first
            if total <= max_bytes:
                break
            if f.path not in doomed:
                doomed[f.path] = f
                total -= f.size
    if not dry_run:
        for f in doomed.values():
            try:
                f.path.unlink()
            except FileNotFoundError:
                pass
    kept = sum(f.size for f in files if f.path not in doomed)
    return PruneResult(list(doomed.values()), kept, dry_run)


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
          "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40}  # fmt: skip


def parse_size(text: str) -> int:
    """"2G", "500M", "1.5GiB", "4096" -> bytes (binary units); UsageError otherwise."""
    s = str(text).strip().lower().replace(" ", "")
    number = s.rstrip("kmgtib")
    unit = s[len(number):]
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in _UNITS or value < 0 or value != value:
        raise UsageError(f"not a size: {text!r} (e.g. 500M, 2G, 1.5GiB)")
    return int(value * _UNITS[unit])


def human_size(n: int) -> str:
    """Bytes in binary units: 0 B, 512 B, 1.5 KiB, 2.0 GiB."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
