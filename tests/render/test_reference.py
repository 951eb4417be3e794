"""The pure-torch depth renderer (clip2point.kernels.reference via render_depth(backend="torch")) on its own."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from clip2point.defaults import CLIP_MEAN, CLIP_STD, DEPTH_SCALE
from clip2point.errors import BackendUnavailableError, UsageError
from clip2point.kernels import _backend, render_depth
from clip2point.kernels.inputs import check_inputs
from clip2point.kernels.reference import zbuffer
from clip2point.views import camera_bases


def _cloud(batch: int, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(batch, n, 3, generator=g)
    return p / p.norm(dim=-1, keepdim=True).amax(dim=1, keepdim=True)  # unit sphere


def _render(points, bases, **kw):
    return render_depth(points, bases, backend="torch", **kw)


def _brute_force_disk(u: float, v: float, size: int, radius: float) -> set[tuple[int, int]]:
    """Pixels whose centre is within radius of (u, v), in float64: the contract's formula, literally."""
    out = set()
    for i in range(size):
        for j in range(size):
            x, y = -1 + (2 * j + 1) / size, 1 - (2 * i + 1) / size
            if (x - u) ** 2 + (y - v) ** 2 <= radius**2:
                out.add((i, j))
    return out


@pytest.mark.parametrize("size,radius", [(224, 0.02), (97, 0.05), (64, 0.1)])
def test_single_point_is_a_disk_at_the_right_pixel(size, radius):
    bases = camera_bases([(0, 0)])  # right = +x, up = +y
    out = _render(torch.tensor([[[0.5, 0.25, 0.0]]]), bases, image_size=size, radius=radius)
    assert out.shape == (1, 1, 1, size, size)
    covered = out[0, 0, 0] < 1
    pixels = {tuple(ij) for ij in covered.nonzero().tolist()}
    # Points on the pixel-centre lattice make float32 vs float64 boundary ties possible; these
    # coordinates do not fall on such ties, so the sets must match exactly.
    assert pixels == _brute_force_disk(0.5, 0.25, size, radius)
    area_px = math.pi * (radius * size / 2) ** 2
    assert abs(len(pixels) - area_px) <= 2 * math.pi * radius * size / 2 + 2  # within a perimeter
    rows, cols = covered.nonzero().float().mean(0).tolist()
    assert abs(cols + 0.5 - (0.5 + 1) / 2 * size) < 1.0
    assert abs(rows + 0.5 - (1 - 0.25) / 2 * size) < 1.0
    assert out[0, 0, 0][covered].eq(0).all()  # one depth: min == every value


def test_the_nearer_of_two_overlapping_points_wins():
    bases = camera_bases([(0, 0)])  # forward = -z: depth = 1 - z, larger z is nearer
    near, far = [0.0, 0.0, 0.5], [0.03, 0.0, -0.5]  # at 65 px, (0, 0) is the centre of pixel (32, 32)
    kw = {"image_size": 65, "radius": 0.05}
    zb = zbuffer(check_inputs(torch.tensor([[far, near]]), bases, **kw)).view(65, 65)
    assert torch.equal(zb, zbuffer(check_inputs(torch.tensor([[near, far]]), bases, **kw)).view(65, 65))
    assert zb[32, 32] == 0.5 and zb[32, 33] == 0.5  # both cover these: the near point wins
    assert zb[32, 34] == 1.5  # only the far point covers this one
    assert zb[32, 31] == 0.5 and torch.isinf(zb[32, 36])


def test_map_without_points_is_all_background():
    bases = camera_bases(6)
    out = _render(_cloud(2, 16), bases, lengths=torch.tensor([0, 16]), image_size=32)
    assert torch.equal(out[0], torch.ones_like(out[0]))
    assert (out[1] < 1).any()
    far_away = _render(torch.full((1, 4, 3), 50.0), bases, image_size=32)  # off every image
    assert torch.equal(far_away, torch.ones_like(far_away))


def test_value_ranges():
    out = _render(_cloud(3, 300), camera_bases(10), image_size=64)
    fg = out < 1
    assert fg.flatten(2).any(-1).all()
    fg_values = torch.where(fg, out, torch.inf).flatten(2)
    assert torch.equal(
        fg_values.amin(-1), torch.zeros_like(fg_values.amin(-1))
    )  # min foreground is exactly 0
    assert out[fg].max() <= DEPTH_SCALE
    assert set(out[~fg].unique().tolist()) == {1.0}


def test_ragged_lengths_equal_rendering_each_cloud_alone():
    bases = camera_bases(6)
    points = _cloud(3, 200, seed=1)
    lengths = torch.tensor([200, 57, 1])
    padded = points.clone()
    padded[1, 57:] = 0.0  # padding values must not matter...
    padded[2, 1:] = torch.nan  # ...not even NaN
    together = _render(padded, bases, lengths=lengths, image_size=48)
    for b, n in enumerate(lengths.tolist()):
        alone = _render(points[b : b + 1, :n], bases, image_size=48)
        assert torch.equal(together[b : b + 1], alone)


def test_three_channels_are_the_clip_normalisation_of_one():
    points, bases = _cloud(2, 128), camera_bases(6)
    one = _render(points, bases, image_size=40)
    three = _render(points, bases, image_size=40, channels=3)
    assert three.shape == (2, 6, 3, 40, 40)
    mean = torch.tensor(CLIP_MEAN).view(1, 1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 1, 3, 1, 1)
    torch.testing.assert_close(three, (one - mean) / std, rtol=0, atol=1e-6)


def test_distance_changes_values_not_masks_while_the_cloud_is_in_front():
    points, bases = _cloud(2, 256), camera_bases(6)
    assert float(points.norm(dim=-1).max()) <= 1.0
    a = _render(points, bases, image_size=48, distance=1.0)
    b = _render(points, bases, image_size=48, distance=torch.tensor([1.05, 1.1]))
    assert torch.equal(a < 1, b < 1)
    assert not torch.allclose(a[0], b[0]) and not torch.allclose(a[1], b[1])
    per_cloud = _render(points[1:], bases, image_size=48, distance=1.1)
    assert torch.equal(b[1:], per_cloud)


def test_points_at_or_behind_the_camera_plane_are_not_drawn():
    """pytorch3d skips points with view depth < 0 and CLIP2Point's maps count z == 0 as
    background; a point hidden behind such a point shows through instead."""
    bases = camera_bases([(0, 0)])  # looks down -z: depth = distance - p_z
    near = torch.tensor([[[0.0, 0.0, 1.0], [0.3, 0.0, 1.5], [0.0, 0.0, 0.5]]])  # depth 0, -0.5, 0.5
    out = _render(near, bases, image_size=33, distance=1.0)[0, 0, 0]  # odd: a pixel centre at (0, 0)
    assert (out < 1).sum() > 0
    only_front = _render(near[:, 2:], bases, image_size=33, distance=1.0)[0, 0, 0]
    assert torch.equal(out, only_front)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dtypes(dtype):
    points, bases = _cloud(1, 64), camera_bases(6)
    ref = _render(points, bases, image_size=32)
    out = _render(points, bases, image_size=32, out_dtype=dtype)
    assert out.dtype == dtype
    assert torch.equal(out, ref.to(dtype))
    low_in = _render(points.to(dtype), bases, image_size=32)
    assert low_in.dtype == torch.float32
    assert torch.equal(low_in, _render(points.to(dtype).float(), bases, image_size=32))


def test_chunking_does_not_change_the_result(monkeypatch):
    """The dense strategy's chunks (the compact one's: tests/render/test_compact.py)."""
    import clip2point.kernels.reference as ref

    points, bases = _cloud(5, 100), camera_bases(6)
    inputs = check_inputs(points, bases, image_size=32)
    whole = ref.render_depth_dense(inputs)
    assert torch.equal(whole, _render(points, bases, image_size=32))
    calls = []
    splat = ref._splat_dense
    monkeypatch.setattr(
        ref, "_splat_dense", lambda zbuf, points, *a: calls.append(1) or splat(zbuf, points, *a)
    )
    monkeypatch.setattr(ref, "MAX_CELLS_PER_CHUNK", 1)  # one cloud per chunk
    assert torch.equal(ref.render_depth_dense(inputs), whole)
    assert len(calls) == 5


@pytest.mark.parametrize(
    "points,bases,kw,needle",
    [
        (torch.zeros(2, 5), camera_bases(6), {}, "[2, 5]"),
        (torch.zeros(2, 5, 2), camera_bases(6), {}, "[2, 5, 2]"),
        (torch.zeros(2, 5, 3), torch.zeros(6, 3), {}, "[6, 3]"),
        (torch.zeros(2, 5, 3), camera_bases(6), {"lengths": torch.tensor([5])}, "[1]"),
        (torch.zeros(2, 5, 3), camera_bases(6), {"distance": torch.ones(3)}, "[3]"),
        (torch.zeros(2, 5, 3), camera_bases(6), {"channels": 2}, "channels"),
        (torch.zeros(2, 5, 3), camera_bases(6), {"image_size": 0}, "image_size"),
        (torch.zeros(2, 5, 3), camera_bases(6), {"radius": -1.0}, "radius"),
        (torch.zeros(2, 5, 3), camera_bases(6), {"out_dtype": torch.int8}, "out_dtype"),
        (torch.zeros(2, 5, 3, dtype=torch.float64), camera_bases(6), {}, "float64"),
        (torch.zeros(2, 5, 3), camera_bases(6), {"lengths": torch.tensor([1.0, 2.0])}, "integer"),
    ],
)
def test_bad_arguments_raise_usage_errors_naming_them(points, bases, kw, needle):
    with pytest.raises(UsageError) as err:
        _render(points, bases, **kw)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_backend_choice(monkeypatch, caplog):
    monkeypatch.delenv(_backend.ENV_VAR, raising=False)
    cpu = torch.device("cpu")
    assert _backend.resolve_backend("auto", cpu) == "torch"
    assert _backend.resolve_backend("torch", cpu) == "torch"
    with pytest.raises(UsageError, match="render backend"):
        _backend.resolve_backend("cuda-magic", cpu)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(BackendUnavailableError, match="TRITON_INTERPRET=1"):
        _backend.resolve_backend("triton", cpu)
    monkeypatch.setenv(_backend.ENV_VAR, "triton")  # overrides "auto" only...
    with pytest.raises(BackendUnavailableError):
        _backend.resolve_backend("auto", cpu)
    assert _backend.resolve_backend("torch", cpu) == "torch"  # ...not an explicit choice
    monkeypatch.setenv(_backend.ENV_VAR, "bogus")
    with pytest.raises(UsageError, match=_backend.ENV_VAR):
        _backend.resolve_backend("auto", cpu)
    monkeypatch.setenv(_backend.ENV_VAR, "torch")
    monkeypatch.setattr(_backend, "_logged", set())
    with caplog.at_level(logging.DEBUG, logger="c2p.render"):
        _backend.resolve_backend("auto", cpu)
        _backend.resolve_backend("auto", cpu)
    assert [r.getMessage() for r in caplog.records].count(
        "depth rendering backend: torch (requested by C2P_RENDER_BACKEND=torch)"
    ) == 1


def test_triton_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(
        _backend, "triton_import_error", lambda: "ModuleNotFoundError: No module named 'triton'"
    )
    with pytest.raises(BackendUnavailableError, match="triton does not import"):
        _backend.resolve_backend("triton", torch.device("cpu"))
    assert _backend.resolve_backend("auto", torch.device("cuda")) == "torch"


def test_empty_batch_and_empty_clouds():
    bases = camera_bases(6)
    assert _render(torch.zeros(0, 5, 3), bases, image_size=16).shape == (0, 6, 1, 16, 16)
    empty = _render(torch.zeros(2, 0, 3), bases, image_size=16)
    assert torch.equal(empty, torch.ones(2, 6, 1, 16, 16))
