"""The folded 1-channel stem gives the same features as the 3-channel normalised input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clip2point import defaults
from clip2point.errors import ModelError
from clip2point.models.encoders import FoldedStemConv, build_depth_encoder, fold_first_conv, load_clip

MEAN = torch.tensor(defaults.CLIP_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(defaults.CLIP_STD).view(1, 3, 1, 1)


def _depth_maps(n: int, size: int = 224, seed: int = 0) -> torch.Tensor:
    """Depth-map-like inputs: values in [0, 200/255] on a blob, background 1.0 elsewhere."""
    g = torch.Generator().manual_seed(seed)
    d = torch.rand(n, 1, size, size, generator=g) * defaults.DEPTH_SCALE
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    mask = (xx**2 + yy**2) < 0.5
    return torch.where(mask, d, torch.full_like(d, defaults.BACKGROUND))


def _three_channels(d: torch.Tensor) -> torch.Tensor:
    return (d.expand(-1, 3, -1, -1) - MEAN) / STD


@pytest.fixture(scope="module", params=["c2p-tiny", "c2p-tiny-rn"])
def bundle(request):
    return load_clip(request.param, "none")


def test_folded_matches_unfolded(bundle):
    unfolded = build_depth_encoder(bundle, fold=False)
    folded = build_depth_encoder(bundle, fold=True)
    assert (unfolded.in_channels, folded.in_channels) == (3, 1)
    assert isinstance(folded.visual.conv1, FoldedStemConv)
    d = _depth_maps(3)
    with torch.no_grad():
        reference = unfolded(_three_channels(d))
        got = folded(d)
    assert got.shape == reference.shape == (3, bundle.model.visual.output_dim)
    scale = reference.abs().max()
    assert torch.allclose(got, reference, atol=1e-5 * float(scale), rtol=0)


def test_folded_state_dict_is_the_unfolded_one(bundle):
    unfolded = build_depth_encoder(bundle, fold=False).visual.state_dict()
    folded = build_depth_encoder(bundle, fold=True).visual.state_dict()
    assert list(folded) == list(unfolded)
    assert all(torch.equal(folded[k], unfolded[k]) for k in unfolded)


def test_padded_stem_needs_the_border_correction():
    """ModifiedResNet's 3x3 padded stem: naive folding (one constant bias) is wrong at the borders."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, kernel_size=3, stride=2, padding=1, bias=False)
    folded = FoldedStemConv(conv)
    d = _depth_maps(2, size=32)
    reference = conv(_three_channels(d))
    assert torch.allclose(folded(d), reference, atol=1e-5)
    naive = F.conv2d(d, folded.folded_weight(), folded.bias_kernel().sum((1, 2, 3)), 2, 1)
    border_error = (naive - reference).abs()
    assert border_error[..., 1:-1, 1:-1].max() < 1e-5  # interior agrees...
    assert border_error.max() > 1e-2  # ...the first row / column does not


def test_folded_conv_with_bias_and_gradients():
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 4, kernel_size=4, stride=4, bias=True)
    folded = FoldedStemConv(conv)
    d = _depth_maps(1, size=16)
    assert torch.allclose(folded(d), conv(_three_channels(d)), atol=1e-5)
    folded(d).sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.shape == (4, 3, 4, 4)


def test_unfoldable_towers():
    class NoConv(nn.Module):
        pass

    with pytest.raises(ModelError, match="no conv1"):
        fold_first_conv(NoConv())
    with pytest.raises(ModelError, match="input channels"):
        FoldedStemConv(nn.Conv2d(1, 4, 3))


def test_folded_on_rendered_depth(bundle):
    """End to end with the renderer: channels=1 + folded encoder == channels=3 + unfolded encoder."""
    from clip2point.kernels import render_depth
    from clip2point.views import camera_bases

    g = torch.Generator().manual_seed(3)
    points = torch.rand(1, 300, 3, generator=g) * 1.2 - 0.6
    bases = camera_bases(6)[:2]
    d1 = render_depth(points, bases, channels=1, backend="torch")
    d3 = render_depth(points, bases, channels=3, backend="torch")
    with torch.no_grad():
        folded = build_depth_encoder(bundle, fold=True)(d1.flatten(0, 1))
        unfolded = build_depth_encoder(bundle, fold=False)(d3.flatten(0, 1))
    assert torch.allclose(folded, unfolded, atol=1e-5 * float(unfolded.abs().max()), rtol=0)


def test_folding_keeps_the_tower_on_its_device():
    """Folding a tower already on another device (CUDA in real use; "meta" here) puts the constants there too."""
    conv = nn.Conv2d(3, 4, kernel_size=2, stride=2, bias=False, device="meta")
    folded = FoldedStemConv(conv)
    assert {b.device.type for b in folded.buffers()} == {"meta"}
    assert folded(torch.empty(1, 1, 8, 8, device="meta")).shape == (1, 4, 4, 4)
