"""The Triton depth renderer against the torch reference.

On CPU the kernels run in Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1); on a
GPU machine benchmarks/gpu_check.sh runs this file with TRITON_INTERPRET=0 and the "cuda" cases.
The two backends perform the same float32 operations in the same order (no FMA contraction,
IEEE division), so z-buffers, foreground masks and float32 outputs are expected to be identical;
the assertions allow 1e-6 absolute on float32 outputs and one unit in the last place of
float16 / bfloat16 outputs (a cast may round differently on another implementation).
"""

from __future__ import annotations

import os

import pytest
import torch

from clip2point.defaults import CLIP_MEAN, CLIP_STD
from clip2point.kernels import _backend, render_depth
from clip2point.kernels.inputs import check_inputs
from clip2point.kernels.reference import zbuffer
from clip2point.views import camera_bases

pytestmark = pytest.mark.skipif(
    _backend.triton_import_error() is not None,
    reason=f"triton does not import: {_backend.triton_import_error()}",
)

INTERPRET = _backend.interpreter_enabled()
DEVICES = [
    pytest.param(
        "cpu",
        marks=pytest.mark.skipif(not INTERPRET, reason="CPU tensors need TRITON_INTERPRET=1 (interpreter)"),
    ),
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(
            not (torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") == "0"),
            reason="needs a CUDA GPU and TRITON_INTERPRET=0 (benchmarks/gpu_check.sh)",
        ),
    ),
]

# A covering set rather than the full product, to keep the interpreter under a minute:
# (batch, points, views, image size, channels, input dtype, output dtype, ragged lengths)
CASES = [
    (1, 1, 6, 224, 1, torch.float32, torch.float32, False),
    (3, 7, 10, 97, 3, torch.float16, torch.float32, True),
    (3, 1023, 6, 97, 1, torch.bfloat16, torch.float16, True),
    (1, 4099, 10, 224, 3, torch.float32, torch.bfloat16, False),
    (3, 1023, 10, 224, 1, torch.float32, torch.float32, True),
    (3, 4099, 6, 97, 1, torch.float16, torch.bfloat16, True),
]


def _clouds(batch: int, n: int, dtype: torch.dtype, device: str, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(batch, n, 3, generator=g)
    p = p / p.norm(dim=-1, keepdim=True).amax(dim=1, keepdim=True)
    return p.to(dtype).to(device)


def _lengths(batch: int, n: int, ragged: bool, device: str, seed: int) -> torch.Tensor | None:
    if not ragged:
        return None
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, n + 1, (batch,), generator=g)
    lengths[0] = n
    if batch > 2:
        lengths[-1] = 0  # an empty cloud: all-background maps
    return lengths.to(device)


def _assert_same(out: torch.Tensor, ref: torch.Tensor, channels: int) -> None:
    assert out.shape == ref.shape and out.dtype == ref.dtype
    background = torch.tensor(1.0)
    if channels == 3:  # channel 0 of a 3-channel map holds (1 - mean_0) / std_0 on background
        background = (background - torch.tensor(CLIP_MEAN[0])) / torch.tensor(CLIP_STD[0])
    background = background.to(ref.dtype).to(ref.device)
    assert torch.equal(out[:, :, 0] != background, ref[:, :, 0] != background), "foreground masks differ"
    if ref.dtype == torch.float32:
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    else:
        ulp = torch.finfo(ref.dtype).eps * ref.float().abs().clamp_min(1.0)
        assert ((out.float() - ref.float()).abs() <= ulp).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch,n,views,size,channels,in_dtype,out_dtype,ragged", CASES)
def test_triton_equals_reference(device, batch, n, views, size, channels, in_dtype, out_dtype, ragged):
    seed = batch * 1000 + n
    points = _clouds(batch, n, in_dtype, device, seed)
    bases = camera_bases(views, device=device)
    lengths = _lengths(batch, n, ragged, device, seed)
    distance = torch.linspace(0.9, 1.1, batch, device=device) if batch > 1 else 1.0
    kw = dict(lengths=lengths, image_size=size, distance=distance, channels=channels, out_dtype=out_dtype)
    out = render_depth(points, bases, backend="triton", **kw)
    ref = render_depth(points, bases, backend="torch", **kw)
    _assert_same(out, ref, channels)
    if ragged and batch > 2:
        assert torch.equal(out[-1], out[-1, :, :, :1, :1].expand_as(out[-1]))  # empty cloud: background


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf * 0 in the interpreter
@pytest.mark.parametrize("device", DEVICES)
def test_zbuffers_are_identical(device):
    from clip2point.kernels.triton_depth import splat_zbuffer

    points = _clouds(2, 777, torch.float32, device, 5)
    points[1, :5] = torch.tensor(
        [float("nan"), float("inf"), 0.0], device=device
    )  # non-finite points are skipped
    inputs = check_inputs(
        points,
        camera_bases(6, device=device),
        lengths=torch.tensor([777, 600], device=device),
        image_size=61,
        radius=0.05,
    )
    assert torch.equal(splat_zbuffer(inputs), zbuffer(inputs))


@pytest.mark.parametrize("device", DEVICES)
def test_edge_shapes(device):
    bases = camera_bases(6, device=device)
    empty_clouds = render_depth(torch.zeros(2, 0, 3, device=device), bases, image_size=16, backend="triton")
    assert torch.equal(empty_clouds, torch.ones(2, 6, 1, 16, 16, device=device))
    assert render_depth(
        torch.zeros(0, 4, 3, device=device), bases, image_size=16, backend="triton"
    ).shape == (
        0,
        6,
        1,
        16,
        16,
    )
    # A cloud wholly behind the camera plane is not drawn at all, by either backend.
    points = _clouds(1, 50, torch.float32, device, 9)
    kw = dict(image_size=33, distance=-2.0)
    behind = render_depth(points, bases, backend="triton", **kw)
    _assert_same(behind, render_depth(points, bases, backend="torch", **kw), 1)
    assert torch.equal(behind, torch.ones_like(behind))


def test_auto_picks_torch_on_cpu_and_triton_on_cuda(monkeypatch):
    monkeypatch.delenv(_backend.ENV_VAR, raising=False)
    assert _backend.resolve_backend("auto", torch.device("cpu")) == "torch"
    assert _backend.resolve_backend("auto", torch.device("cuda")) == "triton"  # triton imports here
