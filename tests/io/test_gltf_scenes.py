"""Hostile glTF scenes: node trees that share children (a few kilobytes placing a mesh 4**20
times), buffers that name a FIFO or leave the file's folder, and infinite coordinates. Each file
costs only itself: one line naming it, memory bounded by its size (peak RSS measured in a
subprocess, never a timing), nothing printed by numpy."""

from __future__ import annotations

import base64
import json
import os
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from clip2point import io
from tests.hostile_helpers import assert_one_line, changed_entries, read_error, run_files_of, tree_state
from tests.io.test_hostile_files import MB, linux_only, peak_extra, warm  # noqa: F401 (warm: fixture)

TRIANGLE = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)


def _doc(nodes: list[dict], *, roots=(0,), buffer: dict | None = None, vertices: np.ndarray = TRIANGLE) -> dict:
    data = vertices.astype(np.float32).tobytes()
    uri = "data:application/octet-stream;base64," + base64.b64encode(data).decode()
    return {
        "asset": {"version": "2.0"}, "scene": 0, "scenes": [{"nodes": list(roots)}], "nodes": nodes,
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}}]}],
        "buffers": [buffer or {"byteLength": len(data), "uri": uri}],
        "bufferViews": [{"buffer": 0, "byteLength": len(data)}],
        "accessors": [{"bufferView": 0, "componentType": 5126, "count": len(vertices), "type": "VEC3"}],
    }  # fmt: skip


def _write(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc, separators=(",", ":")))
    return path


def dag_bomb(path: Path) -> Path:
    """20 levels of nodes, each listing its child 4 times: 4**20 placements of one triangle."""
    return _write(path, _doc([{"children": [i + 1] * 4} for i in range(20)] + [{"mesh": 0}]))


def wide_bomb(path: Path) -> Path:
    """One node listing its child a million times."""
    return _write(path, _doc([{"children": [1] * 1_000_000}, {"mesh": 0}]))


def fifo_buffer(folder: Path) -> Path:
    os.mkfifo(folder / "buffer.bin")
    return _write(folder / "fifo.gltf", _doc([{"mesh": 0}], buffer={"byteLength": 36, "uri": "buffer.bin"}))


def infinite_glb(path: Path) -> Path:
    """A GLB whose vertices include infinities, placed through a scaled node (a matrix product)."""
    verts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [np.inf, 0, 0], [-np.inf, np.inf, 1]], np.float32)
    doc = _doc([{"mesh": 0, "scale": [2, 2, 2]}], vertices=verts)
    doc["meshes"][0]["primitives"][0]["mode"] = 0  # points
    binary = verts.tobytes()
    doc["buffers"] = [{"byteLength": len(binary)}]
    js = json.dumps(doc).encode()
    js += b" " * (-len(js) % 4)
    body = struct.pack("<II", len(js), 0x4E4F534A) + js + struct.pack("<II", len(binary), 0x004E4942) + binary
    path.write_bytes(b"glTF" + struct.pack("<II", 2, 12 + len(body)) + body)
    return path


def test_shared_children_are_refused_before_anything_is_placed(tmp_path):
    assert dag_bomb(tmp_path / "dag.gltf").stat().st_size < 2048
    read_error(tmp_path / "dag.gltf", "node 1 is twice among node 0's children (a node may have one parent)")
    read_error(wide_bomb(tmp_path / "wide.gltf"), "node 1 is twice among node 0's children")
    _write(tmp_path / "two_parents.gltf", _doc([{"children": [2]}, {"children": [2]}, {"mesh": 0}], roots=(0, 1)))
    read_error(tmp_path / "two_parents.gltf", "node 2 is a child of nodes 0 and 1")
    _write(tmp_path / "root_twice.gltf", _doc([{"mesh": 0}], roots=(0, 0)))
    read_error(tmp_path / "root_twice.gltf", "scene node 0 is listed twice")
    _write(tmp_path / "root_child.gltf", _doc([{"children": [1]}, {"mesh": 0}], roots=(0, 1)))
    read_error(tmp_path / "root_child.gltf", "scene node 1 is a child of node 0")
    _write(tmp_path / "loop.gltf", _doc([{"mesh": 0}, {"children": [2]}, {"children": [1]}]))
    read_error(tmp_path / "loop.gltf", "cycle")  # unreachable from the scene, still refused
    _write(tmp_path / "bad_child.gltf", _doc([{"children": [[1]]}, {"mesh": 0}]))
    read_error(tmp_path / "bad_child.gltf", "refers to node '[1]', which does not exist")


@linux_only
@pytest.mark.parametrize("make", [dag_bomb, wide_bomb])
def test_bombs_cost_at_most_four_times_their_size(tmp_path, warm, make):  # noqa: F811
    path = make(tmp_path / "bomb.gltf")
    got = peak_extra(path, warm)
    assert "a node may have one parent" in got["error"]
    assert got["extra"] < 4 * path.stat().st_size + 64 * MB, got


def test_every_placement_of_a_shared_mesh_counts_against_max_points(tmp_path):
    # glTF lets several nodes place one mesh (instancing): each placement counts, before any read
    path = _write(tmp_path / "three.gltf", _doc([{"mesh": 0}, {"mesh": 0, "translation": [5, 0, 0]}, {"mesh": 0}], roots=(0, 1, 2)))
    read_error(path, "places 9 vertices (3 mesh instances), more than the limit of 8 (max_points)", max_points=8)
    np.testing.assert_array_equal(io.read_points(path, max_points=9), np.concatenate([TRIANGLE, TRIANGLE + [5, 0, 0], TRIANGLE]))


def test_a_buffer_that_names_a_fifo_is_refused_without_blocking(tmp_path):
    path = fifo_buffer(tmp_path)
    probe = "import sys\nfrom clip2point import io\ntry:\n    io.read_cloud(sys.argv[1])\nexcept Exception as e:\n    print(e)"
    # (the timeout only turns a hang into a failure)
    out = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == f"{path}: glTF buffer 0 ('buffer.bin') is not a regular file", out


def test_buffers_must_be_regular_files_inside_the_folder(tmp_path):
    outside = tmp_path / "outside.bin"
    outside.write_bytes(TRIANGLE.tobytes())
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "link.bin").symlink_to(outside)
    (folder / "sub").mkdir()
    for uri, needle in (("link.bin", "outside the file's folder"), ("sub", "is not a regular file"),
                        ("../outside.bin", "outside the file's folder"), ("/dev/zero", "outside the file's folder"),
                        ("missing.bin", "No such file")):  # fmt: skip
        path = _write(folder / "m.gltf", _doc([{"mesh": 0}], buffer={"byteLength": 36, "uri": uri}))
        read_error(path, needle)
    (folder / "short.bin").write_bytes(b"\0" * 12)
    path = _write(folder / "m.gltf", _doc([{"mesh": 0}], buffer={"byteLength": 10**12, "uri": "short.bin"}))
    read_error(path, "declares 1000000000000 bytes, holds 12")


def test_infinite_coordinates_are_dropped_without_a_warning(tmp_path):
    path = infinite_glb(tmp_path / "inf.glb")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pts = io.load_raw(path, mesh_samples=100, rng=0)
        cloud = io.read_cloud(path, n_points=64)
    assert not caught, [str(w.message) for w in caught]
    np.testing.assert_array_equal(pts, [[0, 0, 0], [2, 0, 0], [0, 2, 0], [0, 0, 2]])
    assert np.isfinite(cloud).all() and len(cloud) == 4
    _write(tmp_path / "nan_matrix.gltf", _doc([{"mesh": 0, "matrix": [float("nan")] * 16}]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_error(tmp_path / "nan_matrix.gltf", "all coordinates are NaN or Inf")
    assert not caught


def test_classify_gives_each_hostile_gltf_one_line_and_goes_on(tmp_path):
    from clip2point.synth import write_dataset

    write_dataset(tmp_path / "data", classes=["cube", "sphere"], per_class=1, test_per_class=0, fmt="ply", n_points=256, seed=0)
    folder = tmp_path / "data" / "train"
    bad = [dag_bomb(folder / "dag_bomb.gltf"), wide_bomb(folder / "wide_bomb.gltf"), fifo_buffer(folder)]
    infinite_glb(folder / "inf.glb")
    before = tree_state(tmp_path)
    out = tmp_path / "rows.jsonl"
    cmd = [sys.executable, "-m", "clip2point", "classify", folder, "-r", "--labels", "cube,sphere", "--model", "c2p-tiny",
           "--pretrained", "none", "-o", out, "--workers", "2"]  # fmt: skip
    r = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stderr
    rows = {Path(row["path"]).name: row for row in map(json.loads, out.read_text().splitlines())}
    good = [p.name for p in folder.rglob("*.ply")] + ["inf.glb"]
    assert len(good) == 3 and sorted(rows) == sorted(good + ["dag_bomb.gltf", "wide_bomb.gltf", "fifo.gltf"])
    assert all(rows[name]["label"] and rows[name]["error"] is None for name in good)
    failed = [line for line in r.stderr.splitlines() if line.startswith("failed ")]
    assert sorted(failed) == sorted(f"failed {p}: {rows[p.name]['error'].split(': ', 1)[1]}" for p in bad)
    assert "Warning" not in r.stderr and "Traceback" not in r.stderr
    assert_one_line(failed[0], "failed")
    after = tree_state(tmp_path)
    assert changed_entries(before, after) == run_files_of(out, tmp_path)
