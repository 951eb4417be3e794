"""Formats that scanners and driving datasets produce: LAS / LAZ, E57 (files written by laspy and
pye57 themselves) and KITTI / nuScenes .bin rows, with the same bad-input rules as every reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clip2point import io
from clip2point.errors import InputFileError, OptionError
from tests.io.reader_helpers import (
    SCAN_PTS,
    SCAN_RNG,
    error_of,
)

# ---------------------------------------------------------------------------------------------
# LAS / LAZ (laspy writes them)
# ---------------------------------------------------------------------------------------------


def _las(path: Path, pts: np.ndarray, fmt: int = 3):
    laspy = pytest.importorskip("laspy")
    header = laspy.LasHeader(point_format=fmt, version="1.2")
    header.scales = [0.001, 0.001, 0.001]
    header.offsets = [0.0, 0.0, 0.0]
    las = laspy.LasData(header)
    las.x, las.y, las.z = pts[:, 0], pts[:, 1], pts[:, 2]
    las.write(path)


@pytest.mark.parametrize("name", ["scan.las", "scan.laz"])
def test_las_and_laz_written_by_laspy(tmp_path, name):
    if name.endswith(".laz"):
        laspy = pytest.importorskip("laspy")
        if not laspy.LazBackend.detect_available():
            pytest.skip("no LAZ backend (lazrs) installed")
    _las(tmp_path / name, SCAN_PTS)
    got = io.read_points(tmp_path / name)
    np.testing.assert_allclose(got, SCAN_PTS.astype(np.float32), atol=1e-3)
    cloud = io.read_cloud(tmp_path / name, n_points=128)
    assert cloud.shape == (128, 3) and np.isfinite(cloud).all()


def test_las_header_lies_and_truncation(tmp_path):
    _las(tmp_path / "a.las", SCAN_PTS)
    data = bytearray((tmp_path / "a.las").read_bytes())
    (tmp_path / "cut.las").write_bytes(bytes(data[: len(data) - 600]))
    assert "truncated LAS" in error_of(tmp_path / "cut.las")
    assert "max_points" in error_of(tmp_path / "a.las", max_points=100)
    (tmp_path / "junk.las").write_bytes(b"not a las file at all" * 10)
    assert "not a LAS/LAZ file" in error_of(tmp_path / "junk.las")


# ---------------------------------------------------------------------------------------------
# E57 (pye57 writes it)
# ---------------------------------------------------------------------------------------------


def test_e57_written_by_pye57(tmp_path):
    pye57 = pytest.importorskip("pye57")
    e57 = pye57.E57(str(tmp_path / "scan.e57"), mode="w")
    e57.write_scan_raw({"cartesianX": SCAN_PTS[:, 0], "cartesianY": SCAN_PTS[:, 1], "cartesianZ": SCAN_PTS[:, 2]})
    e57.close()
    np.testing.assert_allclose(io.read_points(tmp_path / "scan.e57"), SCAN_PTS.astype(np.float32), rtol=1e-6)
    assert "max_points" in error_of(tmp_path / "scan.e57", max_points=100)
    data = (tmp_path / "scan.e57").read_bytes()
    (tmp_path / "cut.e57").write_bytes(data[:-1024])
    assert "E57 header says the file has" in error_of(tmp_path / "cut.e57")
    (tmp_path / "junk.e57").write_bytes(b"ASTM-E5" + b"\x00" * 2000)
    assert "not an E57 file" in error_of(tmp_path / "junk.e57")


# ---------------------------------------------------------------------------------------------
# KITTI / nuScenes .bin
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("columns", [4, 5])
def test_kitti_and_nuscenes_bin(tmp_path, columns):
    rows = np.concatenate([SCAN_PTS, SCAN_RNG.random((len(SCAN_PTS), columns - 3))], axis=1).astype(np.float32)
    rows.tofile(tmp_path / "000001.bin")
    got = io.read_points(tmp_path / "000001.bin", bin_columns=columns)
    np.testing.assert_array_equal(got, rows[:, :3])
    assert io.read_cloud(tmp_path / "000001.bin", n_points=64, bin_columns=columns).shape == (64, 3)


def test_bin_size_must_be_whole_rows(tmp_path):
    np.zeros(4 * 10 + 1, dtype=np.float32).tofile(tmp_path / "odd.bin")
    msg = error_of(tmp_path / "odd.bin")
    assert "not a whole number of 4-column float32 rows" in msg and "bin_columns" in msg
    np.zeros((10, 4), dtype=np.float32).tofile(tmp_path / "ten.bin")
    assert "max_points" in error_of(tmp_path / "ten.bin", max_points=5)
    with pytest.raises(OptionError, match="bin_columns must be between 3 and 64"):
        io.read_points(tmp_path / "ten.bin", bin_columns=2)
    with pytest.raises(OptionError, match="max_points must be"):
        io.read_points(tmp_path / "ten.bin", max_points=0)


def test_bin_files_that_are_checkpoints_or_archives_are_refused_not_read_as_noise(tmp_path):
    """A folder scan meets pytorch_model.bin and friends: any file of a whole number of rows would
    otherwise read as a cloud of noise and get a label."""
    import gzip
    import pickle

    import torch
    from safetensors.torch import save_file

    state = {"w": torch.randn(64, 16)}
    torch.save(state, tmp_path / "zip.bin")
    torch.save(state, tmp_path / "legacy.bin", _use_new_zipfile_serialization=False)
    save_file(state, str(tmp_path / "safetensors.bin"))
    (tmp_path / "gzip.bin").write_bytes(gzip.compress(np.random.default_rng(0).random(1600).astype("<f4").tobytes()))
    (tmp_path / "pickle4.bin").write_bytes(pickle.dumps(list(range(1000)), protocol=4))
    for path in sorted(tmp_path.glob("*.bin")):
        path.write_bytes(path.read_bytes().ljust(-(-path.stat().st_size // 16) * 16, b"\0"))  # whole rows
        with pytest.raises(InputFileError, match="not a raw float32 scan"):
            io.read_cloud(path)
    # a real scan whose first x is small but plausible, and one at the origin, still read
    rows = np.random.default_rng(1).normal(size=(2000, 4)).astype("<f4")
    rows[0, 0] = 1e-3
    rows.tofile(tmp_path / "scan.bin")
    assert io.read_cloud(tmp_path / "scan.bin").shape == (1024, 3)
    rows[0] = 0.0
    rows.tofile(tmp_path / "scan.bin")
    assert io.read_cloud(tmp_path / "scan.bin").shape == (1024, 3)


def test_bin_pickles_of_protocol_2_and_3_are_refused(tmp_path):
    """pickle.dump's default protocol until Python 3.8: PROTO at the start, STOP at the end."""
    import pickle

    for protocol in (2, 3):
        obj = {"w": list(range(3000)), "pad": ""}
        data = pickle.dumps(obj, protocol=protocol)
        obj["pad"] = "x" * (-len(data) % 16)  # whole 16-byte rows, so only the signature can tell
        data = pickle.dumps(obj, protocol=protocol)
        assert len(data) % 16 == 0 and data.endswith(b".")
        (tmp_path / f"p{protocol}.bin").write_bytes(data)
        with pytest.raises(InputFileError, match="a Python pickle"):
            io.read_cloud(tmp_path / f"p{protocol}.bin")
