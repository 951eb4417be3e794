"""`c2p render`: several files, folders and patterns, one output each (PNG montage or the maps as
.npy), bad files reported without stopping the others, and the montage's two-row grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.cli_helpers import run_c2p


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> Path:
    """Three readable clouds in two formats, and one broken PLY, in one folder."""
    from clip2point.synth import write_dataset

    root = tmp_path_factory.mktemp("render")
    write_dataset(root, classes=["cube", "torus"], per_class=1, test_per_class=0, fmt="ply", n_points=400, seed=1)
    folder = root / "scans"
    folder.mkdir()
    for i, ply in enumerate(sorted((root / "train").rglob("*.ply"))):
        ply.rename(folder / ply.name)
        if i == 0:
            from clip2point.io import read_cloud

            np.save(folder / "from_npy.npy", read_cloud(folder / ply.name, n_points=300, seed=5))
    (folder / "broken.ply").write_bytes(b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nend_header\n1\n")
    return folder


def _expected_maps(path: Path, views: int, size: int) -> np.ndarray:
    """The maps the encoder gets for `path` under the defaults (1024 random points, seed 0, z up),
    before CLIP's normalisation: render_depth's one channel, computed here without the command."""
    import torch

    from clip2point.io import read_cloud
    from clip2point.kernels import render_depth
    from clip2point.views import camera_bases, view_preset

    cloud = read_cloud(path, n_points=1024, sampling="random", seed=0, up="z")
    maps = render_depth(torch.from_numpy(cloud)[None], camera_bases(list(view_preset(views))), image_size=size, channels=1)
    return maps[0, :, 0].numpy()


def test_several_files_to_npy_hold_the_encoders_maps(scans, tmp_path, capsys, monkeypatch):
    files = sorted(p for p in scans.iterdir() if p.name != "broken.ply")
    out = tmp_path / "maps"
    r = run_c2p(["render", *files, "--out-dir", out, "--format", "npy", "--views", "10", "--size", "64"], capsys, monkeypatch)
    assert r.code == 0, r.err
    assert sorted(p.name for p in out.iterdir()) == sorted(f.stem + ".npy" for f in files)
    for f in files:
        maps = np.load(out / (f.stem + ".npy"))
        assert maps.dtype == np.float32 and maps.shape == (10, 64, 64)
        np.testing.assert_array_equal(maps, _expected_maps(f, 10, 64))
        assert maps.max() == 1.0 and maps.min() < 200 / 255 + 1e-6  # background 1, covered pixels at most 200/255


def test_a_folder_with_a_bad_file_renders_the_others_and_exits_1(scans, tmp_path, capsys, monkeypatch):
    from PIL import Image

    out = tmp_path / "pngs"
    r = run_c2p(["render", scans, "--out-dir", out, "--size", "32"], capsys, monkeypatch)
    assert r.code == 1
    failed = [line for line in r.err.splitlines() if line.startswith("failed")]
    assert len(failed) == 1 and "broken.ply" in failed[0]
    assert "rendered 3 of 4 files" in r.err
    written = sorted(out.iterdir())
    assert [p.name for p in written] == sorted(p.stem + ".png" for p in scans.iterdir() if p.name != "broken.ply")
    assert all(Image.open(p).format == "PNG" for p in written)


def test_glob_patterns_and_a_single_out_file(scans, tmp_path, capsys, monkeypatch):
    out = tmp_path / "one.npy"
    r = run_c2p(["render", str(scans / "cube*.ply"), "--out", out, "--size", "32"], capsys, monkeypatch)
    assert r.code == 0, r.err
    assert np.load(out).shape == (6, 32, 32)  # the format follows --out's extension
    assert str(out) in r.err


@pytest.mark.parametrize(
    "args, needle",
    [
        ([], "say where to write"),
        (["--out", "{tmp}/a.png", "--out-dir", "{tmp}/d"], "not both"),
        (["--out", "{tmp}/a.jpg"], "write a .png montage or .npy maps"),
        (["--out", "{tmp}/a.png", "--format", "npy"], "is .png but --format is npy"),
        (["--out", "{tmp}/a.png", "--size", "32"], "--output names one file, but the inputs hold 4: use --out-dir DIR"),
    ],
)
def test_render_refuses_an_unclear_destination_in_one_line(scans, tmp_path, capsys, monkeypatch, args, needle):
    r = run_c2p(["render", scans, *(a.format(tmp=tmp_path) for a in args)], capsys, monkeypatch)
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and needle in r.err, r.err
    assert not any(tmp_path.iterdir())  # nothing written, not even ./views.png's successor


def test_an_out_dir_that_is_a_file_is_refused_before_any_file_is_read(scans, tmp_path, capsys, monkeypatch):
    taken = tmp_path / "taken"
    taken.write_text("mine")
    r = run_c2p(["render", scans, "--out-dir", taken], capsys, monkeypatch)
    assert r.code == 2 and "--out-dir must be a folder, but it is a file" in r.err and "failed" not in r.err
    assert taken.read_text() == "mine"


def test_output_names_stay_distinct_and_readable():
    from clip2point.commands.render import output_names

    files = [Path("a/chair.ply"), Path("b/chair.ply"), Path("a/chair.off"), Path("x/cube.npy"), Path("x/cube.npy"), Path("lamp.pcd")]
    assert output_names(files, ".png") == [
        "a__chair.ply.png", "b__chair.ply.png", "chair.off.png", "cube.png", "cube-2.png", "lamp.png",
    ]
    # names that differ in case only still get two files on a case-insensitive file system
    names = output_names([Path("s/Mug.ply"), Path("s/mug.ply")], ".npy")
    assert len({n.lower() for n in names}) == 2


def _white_runs(line: np.ndarray) -> int:
    """How many separate stretches of pure white a row or column of pixels crosses."""
    white = np.r_[False, line == 255, False]
    return int(np.count_nonzero(white[1:] & ~white[:-1]))


@pytest.mark.parametrize("views, grid", [(6, (3, 2)), (10, (5, 2))])
def test_montage_lays_views_out_in_two_rows(views, grid):
    from clip2point.commands._montage import depth_montage, grid_shape
    from clip2point.views import view_preset

    assert grid_shape(views) == grid
    size = 48
    image = np.asarray(depth_montage(np.ones((views, size, size), np.float32), view_preset(views)))
    columns, rows = grid
    mid_x = [x for x in range(image.shape[1]) if (image[:, x] == 255).sum() >= 2 * size]  # columns through tiles
    mid_y = [y for y in range(image.shape[0]) if (image[y] == 255).sum() >= 2 * size]
    assert _white_runs(image[mid_y[len(mid_y) // 4]]) == columns  # a row of pixels through the first tile row
    assert _white_runs(image[:, mid_x[0]]) == rows
