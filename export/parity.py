"""How exported graphs are checked against torch: the tolerance rule, the reports, the inputs.

Tolerance (float32 graphs): max |logits_ort - logits_torch| <= rtol * max(1, max |logits_torch|)
(rtol = 1e-3 by default: a thousandth of the largest logit, which for CLIP-style logits is a
thousandth of the logit scale), and the same argmax for every row, except rows whose two best
torch logits are within two tolerances of each other (a near tie, where rounding may
legitimately pick either). int8 graphs are not held to it: their differences are recorded
(`compare_int8`). The TensorRT check (`clip2point.export.tensorrt`) uses the same rule against
ONNX Runtime with a looser tolerance.

Inputs: random depth maps with the renderer's value range, depth maps rendered from synthetic
shapes (`clip2point.synth`), and those shapes' clouds themselves for the points graph.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clip2point import defaults
from clip2point.errors import ExportCheckError

DEFAULT_RTOL = 1e-3
# Shape classes of clip2point.synth used as the "real" check inputs: varied silhouettes.
CHECK_SHAPES = ("chair", "mug", "torus", "table", "bottle", "cone")


# ---------------------------------------------------------------------------------------------
# Comparisons
# ---------------------------------------------------------------------------------------------


@dataclass
class ParityReport:
    """How far a graph's logits are from torch's on one set of inputs."""

    inputs: str
    batch: int
    max_abs_diff: float
    max_rel_diff: float
    tolerance: float
    argmax_agreement: float
    near_ties: int
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return (
            f"{self.inputs} inputs (batch {self.batch}): max |diff| {self.max_abs_diff:.3g} "
            f"(tolerance {self.tolerance:.3g}), max rel diff {self.max_rel_diff:.3g}, "
            f"argmax agreement {self.argmax_agreement:.0%}"
        )


def compare_logits(reference: np.ndarray, candidate: np.ndarray, *, inputs: str, rtol: float = DEFAULT_RTOL) -> ParityReport:
    """Compare two [B, K] logit arrays under this module's tolerance rule (see the module docstring)."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        return ParityReport(inputs, int(ref.shape[0]) if ref.ndim else 0, float("inf"), float("inf"), 0.0, 0.0, 0, False)
    tolerance = rtol * max(1.0, float(np.abs(ref).max(initial=0.0)))
    diff = np.abs(ref - cand)
    max_abs = float(diff.max(initial=0.0)) if np.isfinite(cand).all() else float("inf")
    max_rel = float((diff / np.maximum(np.abs(ref), 1e-6)).max(initial=0.0)) if np.isfinite(max_abs) else float("inf")
    same = ref.argmax(axis=1) == cand.argmax(axis=1)
    if ref.shape[1] > 1:
        top2 = np.sort(ref, axis=1)[:, -2:]
        tie = (top2[:, 1] - top2[:, 0]) <= 2 * tolerance
    else:
        tie = np.zeros(len(ref), dtype=bool)
    passed = bool(max_abs <= tolerance and np.all(same | tie))
    return ParityReport(
        inputs=inputs,
        batch=int(ref.shape[0]),
        max_abs_diff=max_abs,
        max_rel_diff=max_rel,
        tolerance=float(tolerance),
        argmax_agreement=float(same.mean()) if len(same) else 1.0,
        near_ties=int(tie.sum()),
        passed=passed,
    )


def summarise(reports: Sequence[ParityReport]) -> dict[str, Any]:
    """The check section of c2p_export.json: worst case over all input sets, plus each set."""
    return {
        "passed": all(r.passed for r in reports),
        "rule": f"max |logits - torch| <= {DEFAULT_RTOL:g} * max(1, max |torch logits|), same argmax except near ties",
        "max_abs_diff": max((r.max_abs_diff for r in reports), default=0.0),
        "max_rel_diff": max((r.max_rel_diff for r in reports), default=0.0),
        "argmax_agreement": min((r.argmax_agreement for r in reports), default=1.0),
        "runs": [r.to_dict() for r in reports],
    }


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.asarray(x, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def compare_int8(reference: np.ndarray, candidate: np.ndarray, *, inputs: str) -> dict[str, Any]:
    """How far int8 logits are from torch's. Int8 is not held to the float tolerance: it passes
    when its logits have the right shape and are finite; agreement and differences are recorded."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    ok = ref.shape == cand.shape and bool(np.isfinite(cand).all())
    if not ok:
        return {"inputs": inputs, "batch": int(ref.shape[0]) if ref.ndim else 0, "max_abs_diff": float("inf"),
                "max_prob_diff": float("inf"), "argmax_agreement": 0.0, "passed": False}  # fmt: skip
    return {
        "inputs": inputs,
        "batch": int(ref.shape[0]),
        "max_abs_diff": float(np.abs(ref - cand).max(initial=0.0)),
        "max_prob_diff": float(np.abs(_softmax(ref) - _softmax(cand)).max(initial=0.0)),
        "argmax_agreement": float((ref.argmax(axis=1) == cand.argmax(axis=1)).mean()) if len(ref) else 1.0,
        "passed": True,
    }


def summarise_int8(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        "passed": all(r["passed"] for r in runs),
        "rule": "int8: finite logits of the right shape; agreement with torch recorded, not held to the float tolerance",
        "max_abs_diff": max((r["max_abs_diff"] for r in runs), default=0.0),
        "max_prob_diff": max((r["max_prob_diff"] for r in runs), default=0.0),
        "argmax_agreement": min((r["argmax_agreement"] for r in runs), default=1.0),
        "runs": list(runs),
    }


# ---------------------------------------------------------------------------------------------
# Check inputs
# ---------------------------------------------------------------------------------------------


def random_depth_maps(batch: int, num_views: int, channels: int, image_size: int, seed: int = 0) -> torch.Tensor:
    """Depth maps with the renderer's value range: [0, 200/255] blobs on a 1.0 background.

    `channels=3` gives them as the unfolded encoder sees them (copied and CLIP-normalised).
    """
    g = torch.Generator().manual_seed(seed)
    depth = torch.rand(batch, num_views, 1, image_size, image_size, generator=g) * defaults.DEPTH_SCALE
    background = torch.rand(batch, num_views, 1, image_size, image_size, generator=g) < 0.7
    depth = torch.where(background, torch.full_like(depth, defaults.BACKGROUND), depth)
    if channels == 3:
        mean = torch.tensor(defaults.CLIP_MEAN).view(1, 1, 3, 1, 1)
        std = torch.tensor(defaults.CLIP_STD).view(1, 1, 3, 1, 1)
        depth = (depth.expand(-1, -1, 3, -1, -1) - mean) / std
    return depth.contiguous()


def synthetic_clouds(count: int, n_points: int = defaults.NUM_POINTS, seed: int = 0, ragged: bool = True):
    """Clouds of clip2point.synth shapes, prepared like `read_cloud` (z-up rotation, unit sphere).

    Returns (points [count, n_points, 3] float32 zero-padded, lengths [count] int64). With
    `ragged`, every other cloud is shorter, so that the padding path is exercised too.
    """
    from clip2point.io import normalize_unit_sphere
    from clip2point.synth import random_cloud
    from clip2point.views import apply_up_axis

    rng = np.random.default_rng(seed)
    points = np.zeros((count, n_points, 3), dtype=np.float32)
    lengths = np.zeros(count, dtype=np.int64)
    for i in range(count):
        n = n_points if not ragged or i % 2 == 0 else max(8, (n_points * 3) // 4)
        cloud = random_cloud(CHECK_SHAPES[i % len(CHECK_SHAPES)], rng, n)
        points[i, :n] = normalize_unit_sphere(apply_up_axis(cloud, defaults.UP_AXIS))
        lengths[i] = n
    return torch.from_numpy(points), torch.from_numpy(lengths)


def synthetic_depth_maps(
    count: int, views, channels: int, image_size: int, radius: float, n_points: int = defaults.NUM_POINTS, seed: int = 0
) -> torch.Tensor:
    """Depth maps rendered (torch reference renderer) from `synthetic_clouds`."""
    from clip2point.kernels import render_depth
    from clip2point.views import camera_bases

    points, lengths = synthetic_clouds(count, n_points, seed)
    return render_depth(
        points, camera_bases(views), lengths=lengths, image_size=image_size, radius=radius, channels=channels, backend="torch"
    )


# ---------------------------------------------------------------------------------------------
# Running a graph beside torch
# ---------------------------------------------------------------------------------------------


def cpu_session(path: str | Path):
    """An ONNX Runtime session on the CPU provider (the reference run of the check)."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        from clip2point.errors import BackendUnavailableError

        raise BackendUnavailableError("onnxruntime is not installed: pip install 'clip2point[onnx]'") from e
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def run_session(session, feeds: dict[str, torch.Tensor | np.ndarray]) -> np.ndarray:
    """The first output of `session` for named inputs (torch tensors are moved to CPU numpy)."""
    arrays = {k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)) for k, v in feeds.items()}
    return session.run(None, arrays)[0]


@torch.no_grad()
def check_against_torch(
    session,
    torch_fn: Callable[..., torch.Tensor],
    feeds: dict[str, torch.Tensor],
    *,
    inputs: str,
    rtol: float = DEFAULT_RTOL,
) -> ParityReport:
    """Run `session` and `torch_fn(*feeds.values())` on the same inputs and compare their logits."""
    reference = torch_fn(*feeds.values()).float().cpu().numpy()
    candidate = run_session(session, feeds)
    return compare_logits(reference, candidate, inputs=inputs, rtol=rtol)


def raise_if_failed(
    graph: str, reports: Sequence[ParityReport], *, reference: str = "torch", candidate: str = "ONNX Runtime"
) -> None:
    """ExportCheckError naming the graph and the worst measured difference when any report failed."""
    failed = [r for r in reports if not r.passed]
    if failed:
        worst = max(failed, key=lambda r: r.max_abs_diff)
        raise ExportCheckError(f"{graph}: {candidate} differs from {reference} on {worst.describe()}")
