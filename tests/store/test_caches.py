"""The cache commands in a cache folder other programs share: only the files c2p writes, in its own
sub-folders, are ever listed or removed; links are never followed; absurd sizes and ages are one
line and exit 2."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.cli_helpers import run_c2p
from tests.hostile_helpers import assert_one_line, tree_state

OLD = 400  # days
HEX = "0123456789abcdef" * 4


def _file(path: Path, size: int = 1000, age_days: float = OLD) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    when = time.time() - age_days * 86400
    os.utime(path, (when, when))
    return path


@pytest.fixture
def shared(tmp_path, monkeypatch) -> tuple[Path, Path, list[Path]]:
    """A shared cache folder (huggingface/, pip/, loose files, links) holding c2p's caches too; the
    folder outside it that links point into; c2p's own files."""
    root, outside = tmp_path / "cache", tmp_path / "outside"
    monkeypatch.setenv("C2P_CACHE_DIR", str(root))
    _file(root / "huggingface" / "hub" / "models--x" / "blobs" / f"{HEX}.safetensors", 50_000)
    _file(root / "pip" / "http" / "wheel")
    _file(root / f"{HEX}.safetensors")  # loose, named like c2p's, yet not in a c2p folder
    _file(outside / "models" / f"{HEX}.safetensors")
    (root / "linked").symlink_to(outside / "models", target_is_directory=True)
    _file(outside / "feats" / f"{HEX}.safetensors")
    (root / "features").symlink_to(outside / "feats", target_is_directory=True)  # c2p's name, but a link
    ours = [_file(root / "text_features" / f"{HEX}.safetensors", 3000),
            _file(root / "text_features" / f".{HEX[:24]}.safetensors.ab_9.tmp", 10),
            _file(root / "pretrain_image_features" / f"{HEX[:24]}.safetensors", 2000)]  # fmt: skip
    _file(root / "text_features" / "notes.txt")  # another program's file inside c2p's folder
    (root / "text_features" / "elsewhere").symlink_to(outside / "models", target_is_directory=True)
    (root / "text_features" / f"{HEX[:32]}.safetensors").symlink_to(outside / "models" / f"{HEX}.safetensors")
    return root, outside, ours


def _others(tmp_path: Path, ours: list[Path]) -> dict:
    skip = {str(p.relative_to(tmp_path)) for p in ours} | {"cache/pretrain_image_features"}
    return {k: v for k, v in tree_state(tmp_path).items() if k not in skip}


def test_ls_lists_only_c2p_files_in_its_own_folders(shared, capsys, monkeypatch):
    root, _, ours = shared
    doc = json.loads(run_c2p(["cache", "ls", "--json"], capsys, monkeypatch).out)
    assert {c["name"]: (c["files"], c["bytes"], c["not_c2p"]) for c in doc["caches"]} == {
        "text_features": (2, 3010, 3), "pretrain_image_features": (1, 2000, 0)}  # fmt: skip
    assert doc["not_c2p"] == sorted([f"{HEX}.safetensors", "features", "huggingface", "linked", "pip"])
    table = run_c2p(["cache", "ls"], capsys, monkeypatch).out
    assert "5 other entries are not c2p's and are left alone" in table


@pytest.mark.parametrize("args", [["prune", "--older-than", "30"], ["prune", "--max-size", "0"], ["rm", "--all"],
                                  ["rm", "text_features", "pretrain_image_features"]])  # fmt: skip
def test_rm_and_prune_remove_only_what_c2p_wrote(shared, tmp_path, args, capsys, monkeypatch):
    root, outside, ours = shared
    before = _others(tmp_path, ours)
    r = run_c2p(["cache", *args], capsys, monkeypatch)
    assert r.code == 0, r.err
    assert_one_line(r.err, "removed")
    assert not any(p.exists() for p in ours)
    after = _others(tmp_path, ours)
    # the folders that held them were touched (mtime), nothing else: not the siblings, not the
    # links, not what they point to, not the foreign entries beside c2p's files
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert changed <= {"cache", "cache/text_features"}, changed
    assert (root / "huggingface" / "hub").is_dir() and (root / "linked").is_symlink() and (outside / "feats").is_dir()
    if args[0] == "rm":
        assert not (root / "pretrain_image_features").exists()  # emptied, so removed
        assert (root / "text_features" / "notes.txt").exists()  # not c2p's: the folder stays


def test_a_cache_folder_swapped_for_a_link_is_not_followed(tmp_path, monkeypatch):
    from clip2point.store import caches

    root, outside = tmp_path / "cache", tmp_path / "outside"
    victim = _file(outside / f"{HEX}.safetensors")
    _file(root / "features" / f"{HEX}.safetensors")
    listed = caches.list_caches(root)
    (root / "features" / f"{HEX}.safetensors").unlink()
    (root / "features").rmdir()
    (root / "features").symlink_to(outside, target_is_directory=True)  # between listing and removal
    monkeypatch.setattr(caches, "list_caches", lambda root=None: listed)
    caches.remove_caches(None, root)
    assert victim.exists()


@pytest.mark.parametrize("args", [["--max-size", "inf"], ["--max-size", "1e999"], ["--max-size", "nan"],
                                  ["--max-size", "1e30"], ["--max-size", "-1"], ["--max-size", "2Q"],
                                  ["--older-than", "inf"], ["--older-than", "1e999"], ["--older-than", "nan"],
                                  ["--older-than", "-1"]])  # fmt: skip
def test_absurd_sizes_and_ages_are_one_line_and_exit_2(shared, tmp_path, args, capsys, monkeypatch):
    before = tree_state(tmp_path)
    r = run_c2p(["cache", "prune", *args], capsys, monkeypatch)
    assert r.code == 2
    assert_one_line(r.err, *(["--older-than"] if args[0] == "--older-than" else ["not a size", repr(args[1])]))
    assert tree_state(tmp_path) == before


def test_library_prune_bounds_its_limits(tmp_path):
    from clip2point.errors import UsageError
    from clip2point.store.caches import parse_size, prune

    for bad in ({"older_than_days": float("inf")}, {"older_than_days": float("nan")}, {"max_bytes": 1 << 70}):
        with pytest.raises(UsageError):
            prune(root=tmp_path, **bad)
    assert parse_size("8") == 8 and parse_size("1T") == 1 << 40 and parse_size("8388608T") == 1 << 63
