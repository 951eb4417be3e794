"""Glob patterns over folders that hold links: `**` never descends into a folder link (two links to
`.` made glob's work exponential, one made it return the same file 41 times), no real folder is
listed twice for one part of a pattern, and a file reached twice is classified once. On a folder
without links the matches are exactly glob.glob's."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clip2point.engine.inputs import _glob, gather_inputs
from tests.hostile_helpers import assert_one_line, changed_entries, run_files_of, tree_state


@pytest.fixture
def tree(tmp_path) -> Path:
    """data/{a,b}.npy, data/sub/{c.npy, deep/d.npy}, a hidden folder, and a broken file."""
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for rel in ("a.npy", "b.npy", "sub/c.npy", "sub/deep/d.npy", ".hidden/e.npy"):
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        np.save(data / rel, rng.normal(size=(64, 3)))
    (data / "sub" / "broken.npy").write_bytes(b"\x93NUMPY not really")
    return data


def _with_links(data: Path) -> Path:
    (data / "here").symlink_to(".", target_is_directory=True)
    (data / "again").symlink_to(".", target_is_directory=True)
    (data / "sub" / "up").symlink_to("..", target_is_directory=True)
    (data / "alias.npy").symlink_to("a.npy")
    return data


PATTERNS = ["**/*.npy", "*/*.npy", "**", "**/", "*", "sub/**/*.npy", "*/", "**/deep/*", "[ab].npy", ".*/*.npy", "s?b/**"]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_without_links_matches_are_globs(tree, pattern):
    assert sorted(_glob(f"{tree}/{pattern}")) == sorted(glob.glob(f"{tree}/{pattern}", recursive=True))


def test_links_to_the_folder_give_each_file_once(tree):
    data = _with_links(tree)
    scanned = gather_inputs(data, recursive=True, extensions="npy")
    real = {(p.stat().st_dev, p.stat().st_ino) for p in scanned if ".hidden" not in p.parts}
    got = gather_inputs(f"{data}/**/*.npy")
    assert [p.relative_to(data).as_posix() for p in got] == ["a.npy", "b.npy", "sub/broken.npy", "sub/c.npy", "sub/deep/d.npy"]
    assert {(p.stat().st_dev, p.stat().st_ino) for p in got} == real  # what -r finds, each once
    assert len(gather_inputs([f"{data}/*/*.npy"])) == 4  # a, b (through a link), sub/c, sub/broken: one path each
    assert len(gather_inputs(f"{data}/**", recursive=True)) == 6  # every folder it matches scanned as -r does: each file once


def test_the_work_is_bounded_by_the_folders_times_the_pattern(tree, monkeypatch):
    data = _with_links(tree)
    listed = []
    real = os.scandir

    def scandir(path="."):
        listed.append(path)
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    pattern = f"{data}/**/*/**/*/**/*.npy"
    got = _glob(pattern)
    # 3 real folders (data, sub, deep; the hidden one is never entered by a wildcard) times 6 parts
    assert len(listed) <= 3 * 6, len(listed)
    # (a one-level `*` may match the links "here" and "up": glob's own meaning, each real folder once)
    assert {Path(p).resolve().relative_to(data).as_posix() for p in got} == {"a.npy", "b.npy", "sub/c.npy", "sub/deep/d.npy", "sub/broken.npy"}


def test_classify_a_pattern_over_linked_folders(tree, tmp_path):
    data = _with_links(tree)
    before = tree_state(tmp_path)
    out = tmp_path / "rows.jsonl"
    cmd = [sys.executable, "-m", "clip2point", "classify", f"{data}/**/*.npy", "--labels", "cube,torus",
           "--model", "c2p-tiny", "--pretrained", "none", "-o", str(out), "--workers", "0"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)  # (a hang guard, not a timing)
    assert r.returncode == 1, r.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(Path(row["path"]).relative_to(data).as_posix() for row in rows) == [
        "a.npy", "b.npy", "sub/broken.npy", "sub/c.npy", "sub/deep/d.npy"]  # fmt: skip
    assert sum(row["error"] is None for row in rows) == 4
    failed = [line for line in r.stderr.splitlines() if line.startswith("failed ")]
    assert_one_line("\n".join(failed), f"failed {data / 'sub' / 'broken.npy'}:")
    after = tree_state(tmp_path)
    assert changed_entries(before, after) == run_files_of(out, tmp_path)
