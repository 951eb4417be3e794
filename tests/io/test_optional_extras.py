"""The core install has no open3d, laspy or pye57: the readers that need none of them work, and
what does need one says which extra installs it (one line, exit 1)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from clip2point import io
from clip2point.errors import InputFileError
from tests.cli_helpers import run_c2p

SCANS = Path(__file__).resolve().parents[2] / "examples" / "scans"


@pytest.fixture
def without(monkeypatch):
    """Make `import NAME` fail as it does when the package is not installed."""

    def block(*names: str) -> None:
        for name in names:
            for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
                monkeypatch.delitem(sys.modules, mod)
            monkeypatch.setitem(sys.modules, name, None)

    return block


def test_every_example_scan_reads_without_open3d(without):
    without("open3d", "trimesh")
    files = sorted(f for f in SCANS.iterdir() if f.suffix.lower() in io.SUPPORTED_EXTENSIONS)
    assert {f.suffix for f in files} >= {".ply", ".off", ".obj", ".stl", ".pcd", ".npy", ".xyz"}
    for f in files:
        assert io.read_cloud(f, n_points=256).shape == (256, 3)


def test_make_pairs_without_open3d_names_the_extra(tmp_path, capsys, monkeypatch, without):
    without("open3d")
    meshes = tmp_path / "meshes"
    meshes.mkdir()
    io.write_off(meshes / "t.off", np.eye(3), np.array([[0, 1, 2]]))
    r = run_c2p(["make-pairs", meshes, tmp_path / "pairs"], capsys, monkeypatch)
    assert r.code == 1
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "pip install 'clip2point[mesh]'" in lines[0], r.err
    assert not (tmp_path / "pairs").exists()


def test_las_without_its_extra_names_it(tmp_path, without):
    without("laspy")
    (tmp_path / "a.las").write_bytes(b"LASF" + bytes(400))
    with pytest.raises(InputFileError, match=r"pip install 'clip2point\[las\]'"):
        io.read_points(tmp_path / "a.las")


def test_e57_without_its_extra_names_it(tmp_path, without):
    pye57 = pytest.importorskip("pye57")
    e57 = pye57.E57(str(tmp_path / "a.e57"), mode="w")
    e57.write_scan_raw({"cartesianX": np.arange(5.0), "cartesianY": np.ones(5), "cartesianZ": np.zeros(5)})
    e57.close()
    without("pye57")
    with pytest.raises(InputFileError, match=r"pip install 'clip2point\[e57\]'"):
        io.read_points(tmp_path / "a.e57")
