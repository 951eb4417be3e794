"""What hostile-input tests share: a snapshot of a folder tree (to assert that nothing outside a
run's own files changed) and the check that an error is the one line a user should see."""

from __future__ import annotations

import os
from pathlib import Path


def tree_state(root: str | Path) -> dict[str, tuple]:
    """Every entry under `root` (links never followed): relative path -> (kind, size, mtime_ns,
    link target), so that two snapshots differ when anything was added, removed or rewritten."""
    root = Path(root)
    state = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            path = Path(folder, name)
            st = path.lstat()
            target = os.readlink(path) if path.is_symlink() else None
            kind = "link" if target is not None else ("dir" if path.is_dir() else "file")
            state[str(path.relative_to(root))] = (kind, 0 if kind == "dir" else st.st_size, st.st_mtime_ns, target)
    return state


def changed_entries(before: dict[str, tuple], after: dict[str, tuple]) -> set[str]:
    """Entries of two `tree_state` snapshots that were added, removed or rewritten."""
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def run_files_of(output: str | Path, root: str | Path) -> set[str]:
    """A classify output and the description it records beside it, relative to `root`: the only
    entries a run may change (clip2point.engine.outputs)."""
    from clip2point.engine.outputs import record_path

    output = Path(output)
    return {str(p.relative_to(root)) for p in (output, record_path(output))}


def assert_one_line(err: str, *needles: str) -> str:
    """`err` is one line (no traceback, no warning) holding every needle; returns it."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "Warning" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, err)
    return lines[0]


def read_error(path: str | Path, *needles: str, **kwargs) -> str:
    """The InputFileError `io.read_cloud(path)` raises: one line naming the file, holding every needle."""
    import pytest

    from clip2point import io
    from clip2point.errors import InputFileError

    with pytest.raises(InputFileError) as info:
        io.read_cloud(path, **kwargs)
    return assert_one_line(str(info.value), f"{path}: ", *needles)
