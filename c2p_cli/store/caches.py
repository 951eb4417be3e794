"""The caches under `paths.cache_root()`: what they hold, how big they are, and clearing them.

Every cache is a folder of files that c2p recomputes when they are missing (text features of the
prompts, few-shot per-view features, pre-training image features), so removing any of them only
costs time. Standard library only.

`$C2P_CACHE_DIR` may be a folder other programs share (`~/.cache`, holding `huggingface/`, `pip/`),
so c2p claims only what it writes itself: the files named `<hex key>.safetensors` (and the
temporary files of their atomic writes) directly inside its own sub-folders (`KNOWN`), each a real
directory. Everything else there (other folders, loose files, links, files with other names) is
listed as not c2p's and never removed; no link is ever followed.
"""

from __future__ import annotations

import math
import os
import re
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from ..option_table import check_range
from .paths import cache_root

# What each cache c2p writes holds; the folder names are c2p's.
KNOWN = {
    "text_features": "text features of the label prompts, per model and template set",
    "features": "few-shot per-view features of the shots (c2p fewshot)",
    "pretrain_image_features": "image features of the pre-training renders (c2p pretrain)",
}
# The names c2p gives cache files: a sha256 key (24 to 64 hex digits) and, for the temporary file
# of an atomic write (clip2point.store.atomic), a leading dot and mkstemp's random part.
_CACHE_FILE = re.compile(r"[0-9a-f]{24,64}\.safetensors")
_TEMP_FILE = re.compile(r"\.[0-9a-f]{24,64}\.safetensors\.[A-Za-z0-9_]+\.tmp")
# Largest age and size limits accepted: a century, and 8 EiB (any larger one keeps everything).
MAX_AGE_DAYS = 36_525
MAX_SIZE = 1 << 63


def is_temp_file(name: str) -> bool:
    """A temporary file of an interrupted atomic write of a cache file."""
    return _TEMP_FILE.fullmatch(name) is not None


def is_cache_file(name: str) -> bool:
    """A name c2p gives the files of its caches (the cache files and their temporary files)."""
    return _CACHE_FILE.fullmatch(name) is not None or is_temp_file(name)


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
    foreign: int = 0  # entries in the folder that are not c2p's files (kept)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def last_used(self) -> float | None:
        return max((f.last_used for f in self.files), default=None)

    def to_dict(self) -> dict:
        return {"name": self.name, "path": str(self.path), "description": self.description, "files": len(self.files),
                "bytes": self.size, "last_used": self.last_used, "not_c2p": self.foreign}  # fmt: skip


@dataclass
class CacheFolder:
    """The caches c2p owns in a cache folder, and the names of the entries it leaves alone."""

    root: Path
    caches: list[Cache]
    not_c2p: list[str]


def _open_folder(path: Path) -> int | None:
    """A descriptor of `path` when it is a real directory (never through a link), else None."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return None


def _scan(name: str, path: Path, fd: int) -> Cache:
    cache = Cache(name, path, KNOWN[name])
    for entry in os.scandir(fd):
        try:
            st = os.stat(entry.name, dir_fd=fd, follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and is_cache_file(entry.name):
            cache.files.append(CacheFile(path / entry.name, st.st_size, max(st.st_atime, st.st_mtime)))
        else:
            cache.foreign += 1
    return cache


def scan_caches(root: str | Path | None = None) -> CacheFolder:
    """c2p's caches under the cache root (its sub-folders that are real directories) with their
    files, and the names of every other entry of the root (left alone). Creates nothing."""
    root = Path(root) if root is not None else cache_root()
    try:
        entries = sorted(os.listdir(root))
    except OSError:
        return CacheFolder(root, [], [])
    caches, others = [], []
    for name in entries:
        fd = _open_folder(root / name) if name in KNOWN else None
        if fd is None:
            others.append(name)
            continue
        try:
            caches.append(_scan(name, root / name, fd))
        finally:
            os.close(fd)
    caches.sort(key=lambda c: list(KNOWN).index(c.name))
    return CacheFolder(root, caches, others)


def list_caches(root: str | Path | None = None) -> list[Cache]:
    """c2p's caches under the cache root, with their files (see `scan_caches`)."""
    return scan_caches(root).caches


def _delete(files: list[CacheFile]) -> list[CacheFile]:
    """Unlink c2p's files through a descriptor of their folder opened without following links, so
    that a folder swapped for a link meanwhile costs nothing outside; returns those removed."""
    removed = []
    for folder in dict.fromkeys(f.path.parent for f in files):
        fd = _open_folder(folder)
        if fd is None:
            continue
        try:
            for f in (f for f in files if f.path.parent == folder):
                try:
                    if stat.S_ISREG(os.stat(f.path.name, dir_fd=fd, follow_symlinks=False).st_mode):
                        os.unlink(f.path.name, dir_fd=fd)
                        removed.append(f)
                except FileNotFoundError:
                    pass
        finally:
            os.close(fd)
    return removed


def remove_caches(names: list[str] | None, root: str | Path | None = None) -> list[Cache]:
    """Delete c2p's files in the named caches (None: every one) and each folder left empty; returns
    the caches with the files removed. Entries that are not c2p's stay. Unknown names: UsageError."""
    caches = list_caches(root)
    by_name = {c.name: c for c in caches}
    if names is None:
        chosen = caches
    else:
        unknown = [n for n in names if n not in by_name]
        if unknown:
            have = ", ".join(by_name) or "none"
            raise UsageError(f"no cache named {', '.join(map(repr, unknown))} (caches here: {have})")
        chosen = [by_name[n] for n in dict.fromkeys(names)]
    for cache in chosen:
        cache.files = _delete(cache.files)
        try:
            cache.path.rmdir()  # only when nothing else is in it
        except OSError:
            pass
    return chosen


@dataclass
class PruneResult:
    removed: list[CacheFile]
    kept_bytes: int
    dry_run: bool

    @property
    def freed(self) -> int:
        return sum(f.size for f in self.removed)


def _check_limits(older_than_days: float | None, max_bytes: int | None) -> None:
    if older_than_days is None and max_bytes is None:
        raise UsageError("say what to prune: an age (older_than_days) and/or a size limit (max_bytes)")
    if older_than_days is not None:
        check_range("older_than_days", older_than_days, 0, MAX_AGE_DAYS)  # nan and inf fail too
    if max_bytes is not None:
        check_range("max_bytes", max_bytes, 0, MAX_SIZE)


def prune(
    older_than_days: float | None = None,
    max_bytes: int | None = None,
    *,
    root: str | Path | None = None,
    dry_run: bool = False,
    temp_grace_s: float = 3600.0,
    now: float | None = None,
) -> PruneResult:
    """Delete c2p's cache files unused for `older_than_days`, then the least recently used ones
    until the caches hold at most `max_bytes`; temporary files of interrupted writes older than
    `temp_grace_s` always go. `dry_run` only reports what would be removed."""
    _check_limits(older_than_days, max_bytes)
    now = time.time() if now is None else now
    files = sorted((f for c in list_caches(root) for f in c.files), key=lambda f: f.last_used)
    doomed: dict[Path, CacheFile] = {}
    for f in files:
        stale_temp = is_temp_file(f.path.name) and now - f.last_used > temp_grace_s
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
    removed = list(doomed.values()) if dry_run else _delete(list(doomed.values()))
    gone = {f.path for f in removed}
    return PruneResult(removed, sum(f.size for f in files if f.path not in gone), dry_run)


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
          "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40}  # fmt: skip


def parse_size(text: str) -> int:
    """"2G", "500M", "1.5GiB", "4096" -> bytes (binary units) up to 8 EiB; UsageError otherwise
    (also for inf, nan and numbers too large for any disk)."""
    s = str(text).strip().lower().replace(" ", "")
    number = s.rstrip("kmgtib")
    unit = s[len(number):]
    try:
        value = float(number) * _UNITS.get(unit, math.nan)
    except ValueError:
        value = math.nan
    if not 0 <= value <= MAX_SIZE:  # nan fails both comparisons
        raise UsageError(f"not a size: {text!r} (a number of bytes up to 8 EiB, e.g. 500M, 2G, 1.5GiB)")
    return int(value)


def human_size(n: int) -> str:
    """Bytes in binary units: 0 B, 512 B, 1.5 KiB, 2.0 GiB."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
