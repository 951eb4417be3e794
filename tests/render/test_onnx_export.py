"""The torch reference renderer exports to ONNX and runs in ONNX Runtime with the same output.

Both exporters of torch 2.14 are exercised: the default dynamo exporter (dynamic batch through
`dynamic_shapes`) and the TorchScript exporter (`dynamo=False`, `dynamic_axes`), at opset 18, the
first with ScatterElements(reduction="min").
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from clip2point.kernels import render_depth
from clip2point.views import camera_bases

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

SIZE = 40
VIEWS = 6


class Renderer(torch.nn.Module):
    """points [B, N, 3], lengths [B] -> depth maps [B, V, C, S, S], fixed views and size."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("bases", camera_bases(VIEWS))
        self.channels = channels

    def forward(self, points: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return render_depth(
            points, self.bases, lengths=lengths, image_size=SIZE, channels=self.channels, backend="torch"
        )


def _clouds(batch: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(batch, n, 3, generator=g)
    p = p / p.norm(dim=-1, keepdim=True).amax(dim=1, keepdim=True)
    lengths = torch.randint(0, n + 1, (batch,), generator=g)
    lengths[0] = n
    return p, lengths


def _export(module: torch.nn.Module, path: str, dynamo: bool) -> None:
    example = _clouds(2, 64, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer / exporter chatter
        if dynamo:
            batch = torch.export.Dim("batch")
            program = torch.onnx.export(
                module,
                example,
                dynamo=True,
                opset_version=18,
                input_names=["points", "lengths"],
                output_names=["depth"],
                dynamic_shapes={"points": {0: batch}, "lengths": {0: batch}},
                verbose=False,
            )
            program.save(path)
        else:
            torch.onnx.export(
                module,
                example,
                path,
                dynamo=False,
                opset_version=18,
                input_names=["points", "lengths"],
                output_names=["depth"],
                dynamic_axes={"points": {0: "batch"}, "lengths": {0: "batch"}, "depth": {0: "batch"}},
            )


@pytest.mark.parametrize("dynamo,channels", [(True, 1), (False, 3)])
def test_reference_exports_and_matches_onnxruntime(tmp_path, dynamo, channels):
    module = Renderer(channels).eval()
    path = str(tmp_path / "render.onnx")
    _export(module, path, dynamo)
    model = onnx.load(path)
    scatters = [n for n in model.graph.node if n.op_type == "ScatterElements"]
    assert scatters and all(
        any(a.name == "reduction" and a.s == b"min" for a in n.attribute) for n in scatters
    )
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for batch, seed in ((5, 1), (1, 2)):  # other batch sizes than the example's 2
        points, lengths = _clouds(batch, 64, seed)
        (got,) = session.run(None, {"points": points.numpy(), "lengths": lengths.numpy()})
        want = module(points, lengths).numpy()
        assert got.shape == want.shape == (batch, VIEWS, channels, SIZE, SIZE)
        background = want[:, :, 0, :1, :1]
        assert np.array_equal(got[:, :, 0] == background, want[:, :, 0] == background)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
