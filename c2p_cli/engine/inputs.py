"""Which files to classify: files, folders, glob patterns and path lists, expanded in a stable order.

A path that cannot be used (missing, unreadable, a folder that cannot be listed, a pattern that
matches nothing) is not an exception: it stands in the input order as a `FileResult` with an
error, so the other inputs go on. Metadata files that clip2point itself writes (or that datasets
ship beside their clouds, such as ModelNet's shape-name lists) are never taken for point clouds.

Standard library only (besides clip2point.engine.batching / clip2point.io constants), so the torch-free
ONNX runner expands inputs the same way.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Sequence
from pathlib import Path

from ..errors import Opt, OptionError
from .batching import FileResult

# Text files beside point clouds that hold names, not points: `c2p synth` writes classes.txt;
# ModelNet ships shape_names / split lists. A `.txt` suffix would otherwise make them "clouds".
_METADATA = re.compile(r"(classes|shape_names|filelist|.*_shape_names|modelnet\d+_(train|test))\.txt", re.IGNORECASE)
_MAGIC = re.compile(r"[*?[]")


def is_metadata(path: str | Path) -> bool:
    """True for files of class names or split lists (classes.txt, modelnet40_shape_names.txt, ...)."""
    return bool(_METADATA.fullmatch(Path(path).name))


def supported_extensions() -> tuple[str, ...]:
    from ..io import SUPPORTED_EXTENSIONS

    return tuple(SUPPORTED_EXTENSIONS)


def parse_extensions(spec: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """"ply,npy" / [".ply", "NPY"] -> (".ply", ".npy"); None keeps every supported extension."""
    if spec is None:
        return None
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[str] = []
    known = supported_extensions()
    for item in items:
        ext = str(item).strip().lower()
        if not ext:
            continue
        ext = ext if ext.startswith(".") else "." + ext
        if ext not in known:
            raise OptionError(Opt("extensions"), f" {ext!r} is not a supported format (supported: {', '.join(known)})")
        if ext not in out:
            out.append(ext)
    if not out:
        raise OptionError(Opt("extensions"), " names no extension")
    return tuple(out)


def read_path_list(text: str) -> list[str]:
    """Paths given one per line (or NUL-separated, as `find -print0` writes them); blank lines skipped."""
    parts = text.split("\0") if "\0" in text else text.splitlines()
    return [p.rstrip("\r\n") for p in parts if p.strip()]


def _error(path, problem: str) -> FileResult:
    return FileResult(path=str(path), error=f"{path}: {problem}")


def _why(e: OSError) -> str:
    return e.strerror or type(e).__name__


def _scan(folder: Path, recursive: bool, exts: tuple[str, ...]) -> list[Path | FileResult]:
    """Files with a wanted extension under `folder`, sorted by path; unreadable sub-folders as errors.

    Symbolic links to folders are not followed (as Path.rglob), so link loops cannot trap the scan.
    """
    found: list[tuple[Path, Path | FileResult]] = []
    stack = [folder]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                items = list(it)
        except OSError as e:
            found.append((d, _error(d, f"cannot read the folder ({_why(e)})")))
            continue
        for entry in items:
            path = d / entry.name
            try:
                if entry.is_dir():
                    if recursive and not entry.is_symlink():
                        stack.append(path)
                elif entry.is_file() and path.suffix.lower() in exts and not is_metadata(path):
                    found.append((path, path))
            except OSError as e:
                found.append((path, _error(path, f"cannot access ({_why(e)})")))
    found.sort(key=lambda item: item[0])
    return [item for _, item in found]


def _expand_one(raw: str | Path, recursive: bool, exts: tuple[str, ...], pattern_ok: bool = True) -> list[Path | FileResult]:
    p = Path(raw)
    try:
        exists = os.path.lexists(p)
        if exists and p.is_dir():
            return _scan(p, recursive, exts)
        if exists:
            if not p.exists():
                return [_error(p, "broken symbolic link")]
            if is_metadata(p):
                return [_error(p, "a list of names written beside point clouds (metadata), not a point cloud")]
            return [p]
    except OSError as e:
        return [_error(p, f"cannot access ({_why(e)})")]
    if pattern_ok and _MAGIC.search(str(raw)):
        matches = sorted(_glob(str(raw)))
        if not matches:
            return [_error(raw, "no file matches this pattern")]
        out: list[Path | FileResult] = []
        for m in matches:
            mp = Path(m)
            if os.path.isdir(m):
                out += _scan(mp, recursive, exts)
            elif mp.suffix.lower() in exts and not is_metadata(mp):
                out.append(mp)
        return _each_file_once(out)
    return [_error(p, "no such file or folder")]


def _glob(pattern: str) -> list[str]:
    """What `glob.glob(pattern, recursive=True)` matches, except that `**` does not descend into
    links to folders (glob follows them: two links to `.` make its work exponential) and no real
    folder is listed twice for the same part of the pattern, so the work is bounded by the folders
    under the pattern's fixed prefix times its parts. Hidden names match only a part starting with
    a dot, as in glob. A folder link matched by a one-level part (`*`) is followed, once."""
    parts = [part for part in pattern.split("/") if part]
    fixed = next((i for i, part in enumerate(parts) if _MAGIC.search(part)), len(parts))
    base = ("/" if pattern.startswith("/") else "") + "/".join(parts[:fixed])
    parts, dirs_only = parts[fixed:], pattern.endswith("/")
    end = ("",) if dirs_only else ()  # glob ends the folders a pattern ending in "/" matches with "/"
    matches: list[str] = []
    seen: set[tuple[int, int, int]] = set()
    stack = [(base, 0, True)] if parts else []  # (folder, part, reached from the part before)
    while stack:
        folder, k, entered = stack.pop()
        try:
            st = os.stat(folder or ".")
            if (st.st_dev, st.st_ino, k) in seen:
                continue
            seen.add((st.st_dev, st.st_ino, k))
            with os.scandir(folder or ".") as it:
                entries = [(e.name, e.is_dir(follow_symlinks=False), e.is_dir()) for e in it]
        except OSError:
            continue
        part, last = parts[k], k == len(parts) - 1
        if part == "**":  # zero folders here, then each real (not linked) sub-folder
            if last and entered and folder:
                matches.append(os.path.join(folder, ""))
            elif not last:
                stack.append((folder, k + 1, True))
            for name, real_dir, is_dir in entries:
                if not name.startswith("."):
                    if last and (is_dir or not dirs_only):
                        matches.append(os.path.join(folder, name, *end))
                    if real_dir:
                        stack.append((os.path.join(folder, name), k, False))
            continue
        for name, _, is_dir in entries:
            if fnmatch.fnmatchcase(name, part) and (part.startswith(".") or not name.startswith(".")):
                if last and (is_dir or not dirs_only):
                    matches.append(os.path.join(folder, name, *end))
                elif not last and is_dir:
                    stack.append((os.path.join(folder, name), k + 1, True))
    return list(dict.fromkeys(matches))


def _each_file_once(entries: list[Path | FileResult]) -> list[Path | FileResult]:
    """The first path to each file (a file reached through two links or two matches is read once)."""
    seen: set[tuple[int, int]] = set()
    out: list[Path | FileResult] = []
    for entry in entries:
        if isinstance(entry, Path):
            try:
                st = entry.stat()
            except OSError:
                st = None
            if st is not None and (st.st_dev, st.st_ino) in seen:
                continue
            if st is not None:
                seen.add((st.st_dev, st.st_ino))
        out.append(entry)
    return out


def gather_inputs(
    paths: Sequence[str | Path] | str | Path,
    recursive: bool = False,
    extensions: str | Sequence[str] | None = None,
) -> list[Path | FileResult]:
    """Expand files, folders and glob patterns (`scans/**/*.ply`) into input files, in the order given.

    Folders are scanned (with `recursive`, their sub-folders too) for the `extensions` given
    (default: every supported format), in sorted order; glob matches are filtered the same way.
    Files named directly are kept as given. Anything that cannot be used becomes a `FileResult`
    with an error, in its place.
    """
    if isinstance(paths, (str, Path)):  # one path, not a sequence of one-character paths
        paths = [paths]
    exts = parse_extensions(extensions) or supported_extensions()
    entries: list[Path | FileResult] = []
    for p in paths:
        entries.extend(_expand_one(p, recursive, exts))
    return entries
