"""The renderer against pytorch3d, the official CLIP2Point renderer: camera bases restated from
pytorch3d's definition in float32, and the depth maps pytorch3d itself rendered
(tests/fixtures/pytorch3d_depth_maps.npz; see tests/fixtures/README.md).

What these checks caught in earlier revisions (before the pole views were fixed, and before the pre-training zoom):
- `test_camera_bases_are_pytorch3d_float32`: (90, 0) and (-90, 180) (and every elevation -90 /
  90 in the random set) had right and up negated, max difference 2.0;
- the fixture test's mask count: maps6 chair_like 10548 of 32036 foreground pixels differed (the
  two pole views; view 4 alone 5274 of 7743), maps10 5274 of 65520, rot6 3316 of 32036;
- the depth-zero test: a point at depth exactly 0 or behind the camera was drawn;
- `test_pretraining_distances_zoom_like_pytorch3d`: without the 1/d zoom, dist0.9 chair_like
  differed on 40046 of 74278 foreground pixels (depth off by up to 0.63).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from clip2point.defaults import POINT_RADIUS
from clip2point.kernels import _backend, render_depth
from clip2point.views import FEW_SHOT_VIEWS_10, Z_UP_ROTATION, ZERO_SHOT_VIEWS_6, camera_bases
from tests.official_restated import look_at_view_transform

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pytorch3d_depth_maps.npz"
CLOUDS = ("chair_like", "cone", "ellipsoid", "asym")
BOUNDARY_TIE_SHARE = 1e-3  # the README's tolerance: pixels exactly on a splat's edge may differ

BACKENDS = [
    "torch",
    pytest.param("triton", marks=pytest.mark.skipif(
        _backend.triton_import_error() is not None or not _backend.interpreter_enabled(),
        reason="the Triton kernel runs on CPU only under TRITON_INTERPRET=1",
    )),
]


def _pytorch3d_R(views) -> torch.Tensor:
    """pytorch3d's look_at_view_transform R in float32, restated from its definition (tests/official_restated.py)."""
    return look_at_view_transform(1.0, views)[0]


def _random_views(n: int, seed: int) -> list[tuple[float, float]]:
    g = torch.Generator().manual_seed(seed)
    angles = (torch.rand(n, 2, generator=g) * 720.0 - 360.0).tolist()
    whole = [(float(e), float(a)) for e in range(-360, 361, 45) for a in (-180, -90, -45, 0, 30, 90, 135, 180)]
    return [tuple(v) for v in angles] + whole


@pytest.mark.parametrize("views", [
    pytest.param(ZERO_SHOT_VIEWS_6, id="6 views"),
    pytest.param(FEW_SHOT_VIEWS_10, id="10 views"),
    pytest.param(((180, 0), (270, 0), (180, 45), (270, -45), (-270, 90), (-180, 180), (90, 90), (-90, 0)), id="poles"),
    pytest.param(_random_views(300, 0), id="random"),
])
def test_camera_bases_are_pytorch3d_float32(views):
    R = _pytorch3d_R(views)  # columns: pytorch3d's x (image left), y (up), z (forward) axes
    expected = torch.stack([-R[:, :, 0], R[:, :, 1], R[:, :, 2]], dim=1)
    ours = camera_bases(list(views))
    worst = (ours - expected).abs().amax(dim=(1, 2))
    bad = [(views[i], float(worst[i])) for i in torch.nonzero(worst > 1e-6).flatten().tolist()]
    assert not bad, f"bases differ from pytorch3d's float32 result for (elev, azim, max difference): {bad[:8]}"


def test_the_pole_views_are_the_float32_ones_not_the_equator_limit():
    """Float32 cos(90 deg) < 0 puts the (90, 0) camera just past the pole: its right and up are
    the opposite of the limit from the equator side (89.9, 0); the same for (-90, 180). Float32
    cos(270 deg) > 0, so (270, 0) agrees with its neighbour on that side, (270.1, 0)."""
    def flipped(pole, near):
        b = camera_bases([pole, near])
        return torch.allclose(b[0, :2], -b[1, :2], atol=5e-3)

    assert flipped((90, 0), (89.9, 0))
    assert flipped((-90, 180), (-89.9, 180))
    b = camera_bases([(270, 0), (270.1, 0)])
    torch.testing.assert_close(b[0], b[1], atol=5e-3, rtol=0)


# --- the maps pytorch3d rendered ----------------------------------------------------------------


@pytest.fixture(scope="module")
def fixtures():
    return np.load(FIXTURES)


def _boundary_ties(points: np.ndarray, basis: np.ndarray, pixels: np.ndarray, size: int, distance: float) -> np.ndarray:
    """For each (row, col) pixel: how far (in NDC^2) its nearest-to-the-edge point's squared distance
    is from radius^2. A mismatch is a boundary tie when that is a float32 rounding (< 1e-6)."""
    uvz = points.astype(np.float64) @ basis.astype(np.float64).T
    front = uvz[:, 2] + distance > 0
    centres = -1.0 + (2.0 * np.arange(size) + 1.0) / size
    out = []
    for row, col in pixels:
        d2 = (uvz[front, 0] - centres[col]) ** 2 + (uvz[front, 1] + centres[row]) ** 2
        out.append(np.abs(d2 - POINT_RADIUS**2).min())
    return np.asarray(out)


def _compare(ours: np.ndarray, ref: np.ndarray, points: np.ndarray, bases: np.ndarray, distances) -> dict:
    """Masks and depths of maps [M, S, S] against pytorch3d's; every mask mismatch must be a boundary tie."""
    fg_ours, fg_ref = ours < 1, ref < 1
    both = fg_ours & fg_ref
    depth_error = float(np.abs(ours[both] - ref[both]).max()) if both.any() else 0.0
    mismatches = np.argwhere(fg_ours != fg_ref)
    ties = []
    for m, row, col in mismatches:
        ties.append(_boundary_ties(points[m], bases[m], np.array([[row, col]]), ours.shape[-1], distances[m])[0])
    return {"foreground": int(fg_ref.sum()), "mismatched": len(mismatches), "depth_error": depth_error,
            "worst_tie": float(max(ties)) if ties else 0.0}


def _check(stats: dict, what: str) -> None:
    assert stats["mismatched"] <= BOUNDARY_TIE_SHARE * stats["foreground"], (
        f"{what}: {stats['mismatched']} of {stats['foreground']} foreground pixels differ from pytorch3d's mask")
    assert stats["worst_tie"] < 1e-6, f"{what}: a mask mismatch that is not a splat-edge tie ({stats})"
    assert stats["depth_error"] <= 1e-4, f"{what}: depth differs from pytorch3d's by {stats['depth_error']}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("key,views,rotate", [("maps6", 6, False), ("maps10", 10, False), ("rot6", 6, True)])
def test_distance_one_maps_are_pytorch3d_s(fixtures, backend, key, views, rotate):
    bases = camera_bases(views)
    total = {"foreground": 0, "mismatched": 0}
    for cloud in CLOUDS:
        points = fixtures[f"points_{cloud}"]
        if rotate:
            points = (points @ Z_UP_ROTATION).astype(np.float32)
        batch = torch.from_numpy(points)[None]
        out = render_depth(batch, bases, backend=backend)[0, :, 0].numpy()
        if backend == "triton":  # and bit for bit the reference's
            assert np.array_equal(out, render_depth(batch, bases, backend="torch")[0, :, 0].numpy())
        ref = fixtures[f"{key}_{cloud}"]
        stats = _compare(out, ref, np.repeat(points[None], views, 0), bases.numpy(), [1.0] * views)
        _check(stats, f"{key}_{cloud}")
        total = {k: total[k] + stats[k] for k in total}
    assert total["foreground"] > 100_000  # the comparison saw real maps


@pytest.mark.parametrize("backend", BACKENDS)
def test_pretraining_distances_zoom_like_pytorch3d(fixtures, backend):
    """`render_view_pairs` (the pre-training render) at d = 0.9 and 1.1 reproduces the official
    render of a jittered distance: camera at d and the cloud scaled by 1/d."""
    from clip2point.training.pretrain import render_view_pairs

    bases = camera_bases(10)
    views = torch.arange(10)
    distances = torch.tensor([[0.9, 1.1]]).expand(10, 2)
    for cloud in CLOUDS:
        points = torch.from_numpy(fixtures[f"points_{cloud}"]).float()[None].expand(10, -1, -1)
        out = render_view_pairs(points, views, distances, bases, backend=backend)[:, 0].numpy()
        if backend == "triton":
            ref_out = render_view_pairs(points, views, distances, bases, backend="torch")[:, 0].numpy()
            assert np.array_equal(out, ref_out)
        for j, d in enumerate((0.9, 1.1)):
            zoomed = np.repeat(fixtures[f"points_{cloud}"][None] / np.float32(d), 10, 0)
            stats = _compare(out[10 * j:10 * (j + 1)], fixtures[f"dist{d}_maps10_{cloud}"], zoomed, bases.numpy(), [d] * 10)
            _check(stats, f"dist{d}_maps10_{cloud}")
            assert stats["foreground"] > 10_000


@pytest.mark.parametrize("backend", BACKENDS)
def test_points_at_depth_zero_or_behind_the_camera_are_not_drawn(backend):
    """pytorch3d skips points with view depth < 0 and CLIP2Point's maps count zbuf == 0 as
    background: a point at depth exactly 0 or behind the camera draws nothing, and what lies behind
    it in its pixel shows through."""
    bases = camera_bases([(0, 0)])  # looks along -z: depth = distance - p_z
    at_zero = torch.tensor([[[0.0, 0.0, 1.0]]])  # depth exactly 0 at distance 1
    behind = torch.tensor([[[0.1, 0.0, 1.25]]])
    visible = torch.tensor([[[0.0, 0.0, 0.5]]])
    kw = {"image_size": 33, "distance": 1.0, "backend": backend}
    assert torch.equal(render_depth(at_zero, bases, **kw), torch.ones(1, 1, 1, 33, 33))
    assert torch.equal(render_depth(behind, bases, **kw), torch.ones(1, 1, 1, 33, 33))
    together = render_depth(torch.cat([at_zero, behind, visible], dim=1), bases, **kw)
    assert torch.equal(together, render_depth(visible, bases, **kw))
    assert (together < 1).any()
