"""Pairs data: the RGB mesh renderer, this project's pairs layout (writer + reader), CLIP2Point's layout,
the training samples, and `c2p make-pairs` / `c2p synth --pairs`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from clip2point.errors import DatasetError, InputFileError
from clip2point.training import pairs as P
from clip2point.training.mesh_render import MeshRenderer, random_light
from clip2point.views import FEW_SHOT_VIEWS_10, camera_bases, camera_basis
from tests.cli_helpers import run_c2p


def _unit_cube():
    v = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)], dtype=np.float32)
    f = np.array([
        [0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
        [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3],
    ])  # fmt: skip
    return v, f


def test_cube_from_the_front_covers_the_expected_square_on_pure_white():
    v, f = _unit_cube()
    image = MeshRenderer(v, f, image_size=224).render_view(camera_basis(0, 0), np.array([0.0, 0.0, 1.0]))
    assert image.shape == (224, 224, 3) and image.dtype == np.uint8
    fg = (image != 255).any(axis=-1)
    # Pixel centres x_j = -1 + (2j + 1) / 224 inside [-0.5, 0.5]: j = 56 .. 167 (112 pixels).
    rows, cols = np.nonzero(fg)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (56, 167, 56, 167)
    assert fg.sum() == 112 * 112
    assert (image[~fg] == 255).all()  # background exactly white
    # A face seen head-on with the light behind the camera: flat, shaded, not white.
    assert len(np.unique(image[fg].reshape(-1, 3), axis=0)) == 1 and image[112, 112, 0] < 255


def test_light_direction_changes_the_shading_but_not_the_silhouette():
    v, f = _unit_cube()
    renderer = MeshRenderer(v, f, image_size=64)
    basis = camera_basis(225, 45)  # three faces visible
    rng = np.random.default_rng(0)
    a, b = renderer.render_view(basis, random_light(rng)), renderer.render_view(basis, random_light(rng))
    assert not np.array_equal(a, b)
    assert np.array_equal((a != 255).any(-1), (b != 255).any(-1))


def test_rgb_render_and_depth_map_of_the_same_pair_line_up():
    from clip2point import synth
    from clip2point.kernels import render_depth

    v, f = synth.random_mesh("chair", np.random.default_rng(3))
    points, images = P.render_pair_views(v, f, n_points=4096, image_size=112, seed=0)
    assert points.dtype == np.float32 and np.linalg.norm(points, axis=1).max() == pytest.approx(1.0, abs=1e-5)
    depth = render_depth(torch.from_numpy(points)[None], camera_bases(10), image_size=112, backend="torch")[0, :, 0]
    for k in range(10):
        rgb_fg = (images[k] != 255).any(-1)
        depth_fg = (depth[k] < 1.0).numpy()
        iou = (rgb_fg & depth_fg).sum() / (rgb_fg | depth_fg).sum()
        assert iou > 0.75, f"view {k}: silhouettes of the render and the depth map overlap with IoU {iou:.2f}"


def test_write_and_read_pairs_keeps_good_meshes_and_lists_bad_ones(tmp_path):
    bad = tmp_path / "broken.off"
    bad.write_text("not a mesh\n")
    sources = P.synth_sources(["cube", "mug"], per_class=1, seed=0)
    sources.insert(1, P.MeshSource(id="broken", path=bad))
    meta = P.write_pairs(sources, tmp_path / "pairs", n_points=256, image_size=224, seed=0)
    assert [m["id"] for m in meta["models"]] == ["cube_0001", "mug_0001"]
    assert meta["skipped"][0]["source"] == str(bad) and "OFF" in meta["skipped"][0]["problem"]
    on_disk = json.loads((tmp_path / "pairs" / "pairs.json").read_text())
    assert on_disk["format"] == "c2p-pairs" and on_disk["views"] == [list(v) for v in FEW_SHOT_VIEWS_10]
    folder = tmp_path / "pairs" / "mug_0001"
    assert np.load(folder / "points.npy").shape == (256, 3)
    assert Image.open(folder / "view_9.png").size == (224, 224)
    index = P.open_pairs(tmp_path / "pairs")
    assert index.layout == "c2p" and len(index) == 2 and index.models[1].label == "mug"
    assert index.models[0].image_paths[3].name == "view_3.png"
    # Deterministic: the same seed gives the same bytes.
    again = P.write_pairs(P.synth_sources(["cube"], 1, 0), tmp_path / "again", n_points=256, seed=0)
    assert again["models"][0]["id"] == "cube_0001"
    assert (tmp_path / "again/cube_0001/view_4.png").read_bytes() == (tmp_path / "pairs/cube_0001/view_4.png").read_bytes()


def test_pretrain_samples_are_seeded_per_epoch_and_item(tmp_path):
    P.write_pairs(P.synth_sources(["cone"], per_class=2, seed=0), tmp_path, n_points=512, seed=0)
    samples = P.PretrainSamples(P.open_pairs(tmp_path), n_points=128, seed=5, with_images=True)
    a, b = samples[1], samples[1]
    assert torch.equal(a["points"], b["points"]) and a["view"] == b["view"]
    assert a["points"].shape == (128, 3) and a["image"].shape == (3, 224, 224)
    assert ((a["distances"] >= 0.9) & (a["distances"] <= 1.1)).all()
    draws = []
    for epoch in range(8):
        samples.set_epoch(epoch)
        draws.append((samples[1]["view"], tuple(samples[1]["distances"].tolist())))
    assert len(set(draws)) == 8  # a new view / distance draw every epoch
    # The image is the render of the drawn view, CLIP-normalised.
    raw = P.load_image(samples.index.models[1].image_paths[draws[-1][0]])
    assert torch.allclose(samples[1]["image"], P.image_to_tensor(raw))


def _fake_clip2point_tree(root, view_pattern="{synset}_{model}/{view}.png", missing_view=False):
    (root / "ShapeNet55/ShapeNet-55").mkdir(parents=True)
    (root / "ShapeNet55/shapenet_pc").mkdir(parents=True)
    names = ["02691156-aaa", "03001627-bbb", "03001627-ccc"]
    (root / "ShapeNet55/ShapeNet-55/train.txt").write_text("".join(f"{n}.npy\n" for n in names))
    rng = np.random.default_rng(0)
    for n in names:
        np.save(root / f"ShapeNet55/shapenet_pc/{n}.npy", rng.normal(size=(8192, 3)).astype(np.float32))
        synset, model = n.split("-")
        for k in range(10):
            if missing_view and n.endswith("ccc") and k == 7:
                continue
            path = root / "rendering" / view_pattern.format(synset=synset, model=model, name=n, view=k)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGBA", (224, 224), (255, 0, 0, 128 if k % 2 else 255)).save(path)
    return names


def test_clip2point_layout_is_read_and_incomplete_models_are_skipped(tmp_path):
    _fake_clip2point_tree(tmp_path, missing_view=True)
    index = P.open_pairs(tmp_path)  # auto: no pairs.json
    assert index.layout == "clip2point" and [m.id for m in index.models] == ["02691156-aaa", "03001627-bbb"]
    assert index.models[1].label == "03001627"
    assert index.models[0].image_paths[3] == tmp_path / "rendering/02691156_aaa/3.png"
    assert index.skipped[0]["source"] == "03001627-ccc" and "7.png" in index.skipped[0]["problem"]
    # Semi-transparent renders are composited on white.
    pixel = P.load_image(index.models[0].image_paths[1])[0, 0]
    assert pixel[0] == 255 and 120 < pixel[1] < 135
    sample = P.PretrainSamples(index, n_points=1024)[0]
    assert sample["points"].shape == (1024, 3)


def test_clip2point_layout_with_another_view_pattern(tmp_path):
    _fake_clip2point_tree(tmp_path, view_pattern="{name}/view_{view:02d}.png")
    index = P.open_pairs(tmp_path, layout="clip2point", view_pattern="{name}/view_{view:02d}.png")
    assert len(index) == 3 and index.models[2].image_paths[9].name == "view_09.png"
    with pytest.raises(DatasetError, match="no usable model"):
        P.open_pairs(tmp_path, layout="clip2point")  # the default pattern finds nothing
    with pytest.raises(DatasetError, match="split list"):
        P.open_pairs(tmp_path, layout="clip2point", split="test")


def test_bad_pairs_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="not a folder"):
        P.open_pairs(tmp_path / "nope")
    (tmp_path / "pairs.json").write_text('{"format": "something"}')
    with pytest.raises(DatasetError, match="not a c2p pairs file"):
        P.open_pairs(tmp_path)
    np.save(tmp_path / "flat.npy", np.zeros((5, 2), dtype=np.float32))
    with pytest.raises(InputFileError, match="flat.npy"):
        P.load_points(tmp_path / "flat.npy")


def test_make_pairs_cli(tmp_path, capsys, monkeypatch):
    from clip2point import synth
    from clip2point.io import write_off

    meshes = tmp_path / "meshes"
    (meshes / "bowl").mkdir(parents=True)
    write_off(meshes / "bowl" / "b1.off", *synth.random_mesh("bowl", np.random.default_rng(0)))
    (meshes / "bowl" / "bad.off").write_text("OFF\n3 1 0\n0 0 0\n")
    result = run_c2p(["make-pairs", meshes, tmp_path / "out", "--points", "300"], capsys, monkeypatch)
    assert result.code == 0, result.err
    assert "wrote 1 pairs" in result.err and "bad.off" in result.err
    index = P.open_pairs(tmp_path / "out")
    assert [(m.id, m.label) for m in index.models] == [("bowl__b1", "bowl")]
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_c2p(["make-pairs", empty, tmp_path / "out2"], capsys, monkeypatch)
    assert result.code != 0 and "holds no mesh" in result.err


def test_synth_pairs_cli(tmp_path, capsys, monkeypatch):
    out = tmp_path / "pairs"
    result = run_c2p(["synth", out, "--pairs", "--classes", "cube,ring", "--per-class", "1", "--points", "200"],
                     capsys, monkeypatch)
    assert result.code == 0, result.err
    index = P.open_pairs(out)
    assert [(m.id, m.label) for m in index.models] == [("cube_0001", "cube"), ("ring_0001", "ring")]
    assert np.load(index.models[1].points_path).shape == (200, 3)
    assert not (out / "train").exists()  # pairs instead of the classification dataset


def test_models_with_unreadable_files_are_skipped_when_the_set_is_opened(tmp_path):
    names = _fake_clip2point_tree(tmp_path)  # 02691156-aaa, 03001627-bbb, 03001627-ccc
    (tmp_path / f"ShapeNet55/shapenet_pc/{names[0]}.npy").write_bytes(b"\x93NUMPY garbage")
    png = tmp_path / "rendering/03001627_bbb/4.png"
    png.write_bytes(png.read_bytes()[:200])  # cut short: a copy that died half-way
    index = P.open_pairs(tmp_path)
    assert [m.id for m in index.models] == ["03001627-ccc"]
    problems = {s["source"]: s["problem"] for s in index.skipped}
    assert set(problems) == {"02691156-aaa", "03001627-bbb"}
    assert "02691156-aaa.npy: not a readable .npy array" in problems["02691156-aaa"]
    assert "4.png: not a readable image" in problems["03001627-bbb"]
    assert all("\n" not in p for p in problems.values())

    pairs = tmp_path / "c2p"
    P.write_pairs(P.synth_sources(["cube", "torus"], 2, 0), pairs, n_points=256, seed=0)
    meta = json.loads((pairs / "pairs.json").read_text())
    first, second, third = (m["id"] for m in meta["models"][:3])
    np.save(pairs / first / "points.npy", np.zeros((10, 2), dtype=np.float32))  # wrong shape
    (pairs / second / "view_0.png").write_bytes(b"not a png")
    np.save(pairs / third / "points.npy", np.array([{"a": 1}], dtype=object))  # would need a pickle
    index = P.open_pairs(pairs)
    assert len(index) == 1 and len(index.skipped) == 3
    problems = [s["problem"] for s in index.skipped]
    assert "points.npy: expected a [P, 3] array of points, got shape (10, 2)" in problems[0]
    assert "view_0.png: not a readable image" in problems[1]
    assert "points.npy: not a readable .npy array" in problems[2]
    for m in index.models:  # what is kept loads
        P.load_points(m.points_path)
        P.load_image(m.image_paths[0])
