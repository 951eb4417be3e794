"""The compact CPU strategy of the torch renderer gives the maps of the frozen v1 renderer, bit for bit.

`benchmarks/_reference_v1.py` is the renderer as it was before the compact strategy (one dense
(2k+1)^2 window per point, one scatter over the whole batch); the live renderer must equal it
(`torch.equal`, not closeness) on awkward inputs: prime and ragged sizes, N = 1, empty clouds,
non-finite and far-away points, per-cloud distances 0.9..1.1 that put part of a cloud behind the
camera plane, radii whose window width is an integer or wider than the image, points on the
pixel lattice and on the boundary of the coverage disk, image sizes 97 and 224, 1 and 3
channels, float16 / bfloat16 inputs and outputs. The dense strategy (the export path) is checked
against both as well.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import clip2point.kernels.reference as ref
from clip2point.kernels import render_depth
from clip2point.kernels.inputs import check_inputs, pixel_centers, squared_radius
from clip2point.views import camera_bases

V1_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "_reference_v1.py"


@pytest.fixture(scope="module")
def v1():
    spec = importlib.util.spec_from_file_location("c2p_tests_reference_v1", V1_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sphere(batch: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(batch, n, 3, generator=g)
    return p / p.norm(dim=-1, keepdim=True).amax(dim=1, keepdim=True).clamp_min(1e-6)


def _ragged(batch: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1)
    lengths = torch.randint(0, n + 1, (batch,), generator=g)
    lengths[0] = n
    if batch > 2:
        lengths[-1] = 0  # an empty cloud
    return lengths


def _assert_all_equal(v1, inputs) -> torch.Tensor:
    """compact == dense == v1, for the maps and for the z-buffers; returns the maps."""
    assert ref.use_compact(inputs)
    maps = ref.render_depth_torch(inputs)
    want = v1.render_depth_v1(inputs)
    assert maps.dtype == want.dtype == inputs.out_dtype and maps.shape == want.shape
    assert torch.equal(maps, want)
    assert torch.equal(ref.render_depth_dense(inputs), want)
    zbuf = ref.zbuffer(inputs)
    assert torch.equal(zbuf, v1.zbuffer(inputs))
    assert torch.equal(ref.zbuffer_dense(inputs), zbuf)
    return maps


# (batch, points, views, image size, radius, channels, input dtype, output dtype, ragged)
CASES = [
    (1, 1, 6, 224, 0.02, 1, torch.float32, torch.float32, False),
    (3, 1021, 10, 224, 0.02, 3, torch.float32, torch.float32, True),
    (5, 97, 10, 97, 0.02, 1, torch.float16, torch.bfloat16, True),
    (2, 257, 6, 97, 0.05, 3, torch.bfloat16, torch.float16, True),
    (3, 7, 10, 224, 4 / 224, 1, torch.float32, torch.float16, True),  # 2 * radius_px = 4: integer
    (2, 131, 6, 224, 5 / 224, 1, torch.float32, torch.float32, False),  # 2 * radius_px = 5
    (2, 61, 6, 97, 0.1, 3, torch.float16, torch.float32, True),
    (3, 13, 6, 17, 0.7, 1, torch.float32, torch.float32, True),
    (2, 5, 6, 11, 2.5, 3, torch.float32, torch.float32, False),  # window wider than the image
    (1, 3, 6, 1, 0.9, 1, torch.float32, torch.float32, False),  # a one-pixel image
]


@pytest.mark.parametrize("batch,n,views,size,radius,channels,in_dtype,out_dtype,ragged", CASES)
def test_compact_equals_v1(v1, batch, n, views, size, radius, channels, in_dtype, out_dtype, ragged):
    seed = batch * 7919 + n * 31 + size
    points = _sphere(batch, n, seed).to(in_dtype)
    # Distances 0.9..1.1: with the clouds in the unit ball, part of the nearer clouds is at or behind the camera plane.
    distance = torch.linspace(0.9, 1.1, batch) if batch > 1 else 0.95
    inputs = check_inputs(
        points,
        camera_bases(views),
        lengths=_ragged(batch, n, seed) if ragged else None,
        image_size=size,
        radius=radius,
        distance=distance,
        channels=channels,
        out_dtype=out_dtype,
    )
    _assert_all_equal(v1, inputs)
    assert torch.isfinite(ref.zbuffer(inputs)).any()  # something was drawn


def test_distances_below_one_cull_points(v1):
    """Distances below 1 (as in the cases above) put points at or behind the camera plane: they are not drawn."""
    g = torch.Generator().manual_seed(3)
    points = torch.randn(1, 500, 3, generator=g)
    points = points / points.norm(dim=-1, keepdim=True)  # on the unit sphere
    bases = camera_bases([(30, 60)])
    for distance in (0.9, 0.95):
        inputs = check_inputs(points, bases, image_size=97, distance=distance)
        _, _, z = ref.project(points, inputs.bases, inputs.distance)
        front = z[0, 0] > 0
        assert 0 < int((~front).sum()) < 500
        maps = _assert_all_equal(v1, inputs)
        assert torch.equal(maps, render_depth(points[:, front], bases, image_size=97, distance=distance))
        assert not torch.equal(maps, render_depth(points, bases, image_size=97, distance=distance + 1.0))


def test_non_finite_far_and_padding_points(v1):
    points = _sphere(3, 211, 11)
    bad = torch.tensor(
        [
            [float("nan"), 0.0, 0.0],
            [0.0, float("inf"), 0.0],
            [0.0, 0.0, float("-inf")],
            [float("inf"), float("-inf"), float("nan")],
            [1e20, 0.0, 0.0],  # finite, far off every image
            [-3e38, 3e38, 3e38],  # finite, projections may overflow
            [0.0, 0.0, 1e-30],
            [2.0, -1.05, 0.3],  # just outside the image in some views: still covers edge pixels
        ]
    )
    points[0, :8] = bad
    points[1, 100:108] = bad
    points[2, 50:] = float("nan")  # padding holds NaN
    lengths = torch.tensor([211, 180, 50])
    for channels in (1, 3):
        inputs = check_inputs(
            points, camera_bases(6), lengths=lengths, image_size=97, radius=0.05, channels=channels
        )
        _assert_all_equal(v1, inputs)


def test_empty_inputs(v1):
    for points, lengths in (
        (torch.zeros(2, 0, 3), None),
        (torch.zeros(0, 5, 3), None),
        (_sphere(3, 9, 1), torch.tensor([0, 0, 0])),
        (torch.full((2, 4, 3), float("nan")), None),
    ):
        inputs = check_inputs(points, camera_bases(6), lengths=lengths, image_size=33, channels=3)
        maps = _assert_all_equal(v1, inputs)
        assert torch.equal(maps, maps[..., :1, :1].expand_as(maps))  # all background


def _boundary_coords(size: int, radius: float, columns: torch.Tensor) -> torch.Tensor:
    """NDC coordinates on the pixel lattice and at radius (+- up to 3 float32 ulps) from pixel centres."""
    centers = pixel_centers(size)[columns]
    r = torch.tensor(radius, dtype=torch.float32)
    out = [centers, -1.0 + 2.0 * columns.float() / size]  # centres and pixel edges
    for rim in (centers + r, centers - r):
        up = down = rim
        out.append(rim)
        for _ in range(3):
            up = torch.nextafter(up, torch.tensor(float("inf")))
            down = torch.nextafter(down, torch.tensor(float("-inf")))
            out += [up, down]
    return torch.cat(out)


def _lattice_cloud(size: int, radius: float) -> torch.Tensor:
    """Points that put pixel centres exactly on, just inside and just outside the coverage disk.

    For view (0, 0) (right = +x, up = +y: NDC (u, v) = (x, y)). Every boundary x is paired with
    rows through pixel centres (where the disk is widest along x) and with boundary rows; and the
    other way round. These are the cases where the compact window's slack and the float32 test matter.
    """
    step = max(1, size // 5)
    xs = _boundary_coords(size, radius, torch.arange(0, size, step))
    ys = _boundary_coords(size, radius, torch.arange(step // 2, size, step))
    centers = pixel_centers(size)
    rows = torch.cat([centers[[0, size // 3, size - 1]], ys[:: max(1, ys.numel() // 3)]])
    pairs = [torch.stack(torch.meshgrid(xs, rows, indexing="ij"), -1).reshape(-1, 2)]
    pairs.append(torch.stack(torch.meshgrid(rows, ys, indexing="ij"), -1).reshape(-1, 2))
    xy = torch.cat(pairs)
    return torch.cat([xy, torch.zeros(xy.shape[0], 1)], dim=-1)[None]


@pytest.mark.parametrize("size,radius", [(224, 0.02), (97, 0.02), (224, 4 / 224), (64, 0.1)])
def test_points_on_the_pixel_lattice_and_the_disk_boundary(v1, size, radius):
    points = _lattice_cloud(size, radius)
    inputs = check_inputs(points, camera_bases([(0, 0)]), image_size=size, radius=radius)
    _assert_all_equal(v1, inputs)
    zbuf = ref.zbuffer(inputs)
    # And against the coverage test over the whole image, with no window at all: the same float32
    # operations for every (point, pixel) pair.
    u, v, _ = ref.project(points, inputs.bases, inputs.distance)
    u, v = u.reshape(-1), v.reshape(-1)
    centers = pixel_centers(size)
    covered = torch.zeros(size, size, dtype=torch.bool)
    for part in range(0, u.numel(), 64):
        du = centers[None, None, :] - u[part : part + 64, None, None]
        dv = -centers[None, :, None] - v[part : part + 64, None, None]
        covered |= (du * du + dv * dv <= squared_radius(radius)).any(0)
    assert torch.equal(torch.isfinite(zbuf.view(size, size)), covered)


def test_chunks_groups_and_point_parts_do_not_change_the_maps(v1, monkeypatch):
    points = _sphere(5, 300, 4)
    lengths = torch.tensor([300, 1, 0, 299, 150])
    inputs = check_inputs(points, camera_bases(10), lengths=lengths, image_size=61, radius=0.05, channels=3)
    whole = ref.render_depth_torch(inputs)
    assert torch.equal(whole, v1.render_depth_v1(inputs))
    width, _ = ref.compact_window(61, inputs.radius)
    assert width == 4
    splats = []
    splat = ref._splat_compact
    monkeypatch.setattr(
        ref,
        "_splat_compact",
        lambda zbuf, prepared, *a: splats.append(prepared[0].shape) or splat(zbuf, prepared, *a),
    )
    monkeypatch.setattr(ref, "ZBUF_CELLS_PER_CHUNK", 1)  # one cloud per chunk
    prepares = []
    prepare = ref._prepare
    monkeypatch.setattr(
        ref,
        "_prepare",
        lambda points, lengths, *a: prepares.append(lengths.shape[0]) or prepare(points, lengths, *a),
    )
    for projected, groups in ((1 << 20, [(0, 5)]), (2 * 10 * 300, [(0, 2), (2, 4), (4, 5)])):
        monkeypatch.setattr(ref, "PROJECTED_PER_GROUP", projected)
        prepares.clear()
        splats.clear()
        chunks = [(a, b) for a, b, _ in ref._compact_chunks(inputs)]
        assert chunks == [(i, i + 1) for i in range(5)]
        assert prepares == [b - a for a, b in groups] and splats == [(1, 10, 300)] * 5
        assert torch.equal(ref.render_depth_torch(inputs), whole)
    monkeypatch.setattr(ref, "CANDIDATES_PER_CHUNK", 7 * 10 * width * width)  # 7 points per part
    splats.clear()
    assert torch.equal(ref.render_depth_torch(inputs), whole)
    assert len(splats) == 5 * 43 and splats[0] == (1, 10, 7) and splats[42] == (1, 10, 300 - 42 * 7)


def test_compact_window_bounds():
    # 224 px, radius 0.02: radius_px = 2.24, so a disk holds at most 5 centres per row.
    assert ref.compact_window(224, 0.02)[0] == 5
    assert ref.compact_window(224, 4 / 224)[0] == 5  # 2 * radius_px = 4: 4 + 1 centres
    assert ref.compact_window(224, 5 / 224)[0] == 6
    assert ref.compact_window(16, 3.0)[0] == 16  # wider than the image: the image
    assert ref.compact_window(1, 0.02)[0] == 1


def test_the_export_path_is_dense_and_gives_the_same_maps(monkeypatch):
    points, bases = _sphere(2, 64, 8), camera_bases(6)
    inputs = check_inputs(points, bases, image_size=40)
    eager = render_depth(points, bases, image_size=40, backend="torch")
    assert ref.use_compact(inputs)
    calls = []
    dense = ref.render_depth_dense

    def spy(inputs):
        calls.append(inputs)
        return dense(inputs)

    monkeypatch.setattr(ref, "render_depth_dense", spy)
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    assert not ref.use_compact(inputs)
    assert torch.equal(render_depth(points, bases, image_size=40, backend="torch"), eager)
    assert len(calls) == 1


def test_points_that_require_gradients_keep_the_differentiable_dense_path():
    points, bases = _sphere(2, 64, 9), camera_bases(6)
    plain = render_depth(points, bases, image_size=32, backend="torch")
    with_grad = render_depth(points.clone().requires_grad_(), bases, image_size=32, backend="torch")
    assert with_grad.requires_grad and torch.equal(with_grad.detach(), plain)
    with_grad.sum().backward()
    with torch.no_grad():
        inputs = check_inputs(points.clone().requires_grad_(), bases, image_size=32)
        assert ref.use_compact(inputs)
