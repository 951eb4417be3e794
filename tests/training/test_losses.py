"""NT-Xent, the balanced pre-training objective, and the LAMB optimiser."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from clip2point.training.lamb import Lamb
from clip2point.training.losses import BalancedPretrainLoss, gather_with_grad, nt_xent


def _nt_xent_loop(a: torch.Tensor, b: torch.Tensor, t: float) -> float:
    """SimCLR's definition written out row by row (float64)."""
    z = F.normalize(torch.cat([a, b]).double(), dim=-1)
    n = len(a)
    total = 0.0
    for i in range(2 * n):
        j = i + n if i < n else i - n
        den = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(float(z[i] @ z[j]) / t) / den)
    return total / (2 * n)


def test_nt_xent_matches_the_definition():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 16, generator=g), torch.randn(5, 16, generator=g)
    assert nt_xent(a, b, 0.07).item() == pytest.approx(_nt_xent_loop(a, b, 0.07), rel=1e-5)
    assert nt_xent(a, b, 0.5).item() == pytest.approx(_nt_xent_loop(a, b, 0.5), rel=1e-5)
    # Symmetric in its arguments, invariant to feature scale.
    assert nt_xent(b, a).item() == pytest.approx(nt_xent(a, b).item(), rel=1e-6)
    assert nt_xent(3 * a, 0.5 * b).item() == pytest.approx(nt_xent(a, b).item(), rel=1e-5)


def test_nt_xent_is_low_for_matching_pairs_and_chance_for_collapsed_features():
    a = torch.eye(6, 8)  # six orthogonal features
    assert nt_xent(a, a).item() < 1e-3
    collapsed = torch.ones(6, 8)
    assert nt_xent(collapsed, collapsed).item() == pytest.approx(math.log(11), rel=1e-5)  # 2N - 1 equal logits


def test_nt_xent_rejects_bad_shapes():
    with pytest.raises(ValueError, match="at least 2"):
        nt_xent(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(ValueError, match="same shape"):
        nt_xent(torch.randn(3, 4), torch.randn(2, 4))


def test_balanced_loss_formula_and_gradients():
    g = torch.Generator().manual_seed(1)
    f1, f2, img = (torch.randn(4, 8, generator=g) for _ in range(3))
    f1.requires_grad_(True)
    loss = BalancedPretrainLoss()
    with torch.no_grad():
        loss.w.fill_(2.0)
    out = loss(f1, f2, img)
    intra, cross = nt_xent(f1, f2), nt_xent((f1 + f2) / 2, img)
    assert out["loss_intra"].item() == pytest.approx(intra.item(), rel=1e-6)
    assert out["loss_cross"].item() == pytest.approx(cross.item(), rel=1e-6)
    assert out["loss"].item() == pytest.approx(cross.item() + intra.item() / 4 + math.log(3), rel=1e-6)
    out["loss"].backward()
    # d/dw [L_intra / w^2 + log(w + 1)] = -2 L_intra / w^3 + 1 / (w + 1)
    assert loss.w.grad.item() == pytest.approx(-2 * intra.item() / 8 + 1 / 3, rel=1e-5)
    assert f1.grad is not None and f1.grad.abs().sum() > 0
    assert BalancedPretrainLoss().w.item() == 1.0


def test_image_features_get_no_gradient():
    img = torch.randn(4, 8, requires_grad=True)
    out = BalancedPretrainLoss()(torch.randn(4, 8, requires_grad=True), torch.randn(4, 8), img)
    out["loss"].backward()
    assert img.grad is None


def test_gather_is_the_identity_without_a_process_group():
    x = torch.randn(3, 4)
    assert gather_with_grad(x) is x


def test_lamb_step_matches_a_hand_computation():
    # torch_optimizer.Lamb's defaults: moments not debiased, weight norm clamped at 10.
    p = torch.nn.Parameter(torch.tensor([3.0, 4.0]))  # norm 5, below the clamp
    opt = Lamb([p], lr=0.1, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01)
    p.grad = torch.tensor([1.0, -2.0])
    opt.step()
    g = torch.tensor([1.0, -2.0])
    m, v = 0.1 * g, 0.001 * g * g  # first step, no bias correction: m / sqrt(v) = sqrt(10) sign(g)
    update = m / (v.sqrt() + 1e-6) + 0.01 * torch.tensor([3.0, 4.0])
    trust = 5.0 / update.norm()
    expected = torch.tensor([3.0, 4.0]) - 0.1 * trust * update
    assert torch.allclose(p.detach(), expected, atol=1e-6)
    assert float(opt.state[p]["step"]) == 1.0


def test_lamb_bias_correction_scales_the_step_like_torch_optimizer_debias():
    w = torch.tensor([30.0, 40.0])  # norm 50: clamped to 10 in the trust ratio
    g = torch.tensor([1.0, -2.0])
    p = torch.nn.Parameter(w.clone())
    opt = Lamb([p], lr=0.1, betas=(0.9, 0.999), eps=1e-6, bias_correction=True)
    p.grad = g.clone()
    opt.step()
    update = (0.1 * g) / ((0.001 * g * g).sqrt() + 1e-6)
    step_size = 0.1 * math.sqrt(1 - 0.999) / (1 - 0.9)
    expected = w - step_size * (10.0 / update.norm()) * update
    assert torch.allclose(p.detach(), expected, atol=1e-5)


def test_lamb_trust_ratio_scales_steps_to_the_clamped_weight_norm():
    big = torch.nn.Parameter(torch.full((4,), 100.0))  # norm 200: clamped to 10
    small = torch.nn.Parameter(torch.full((4,), 0.01))  # norm 0.02
    opt = Lamb([big, small], lr=0.01)
    big.grad, small.grad = torch.ones(4), torch.ones(4)
    before = [big.detach().clone(), small.detach().clone()]
    opt.step()
    # Each tensor moves by lr * min(its own norm, 10), whatever the gradient scale.
    for p, b in zip((big, small), before, strict=True):
        assert (p.detach() - b).norm().item() == pytest.approx(0.01 * min(b.norm().item(), 10.0), rel=1e-4)
    unclamped = torch.nn.Parameter(torch.full((4,), 100.0))
    opt = Lamb([unclamped], lr=0.01, clamp_value=None)
    unclamped.grad = torch.ones(4)
    opt.step()
    assert (unclamped.detach() - 100.0).norm().item() == pytest.approx(0.01 * 200.0, rel=1e-4)


def test_lamb_minimises_a_quadratic_and_handles_zero_weights():
    torch.manual_seed(0)
    target = torch.randn(10)
    x = torch.nn.Parameter(torch.zeros(10))  # zero norm: trust ratio 1 on the first step
    opt = Lamb([x], lr=0.05)
    # Steps are lr * ||x|| long, so the learning rate must decay to settle (as in the real schedule).
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=300)
    start = ((x.detach() - target) ** 2).sum().item()
    for _ in range(300):
        opt.zero_grad()
        ((x - target) ** 2).sum().backward()
        opt.step()
        schedule.step()
    assert ((x.detach() - target) ** 2).sum().item() < 1e-3 * start


def test_lamb_rejects_bad_hyperparameters():
    p = [torch.nn.Parameter(torch.zeros(1))]
    with pytest.raises(ValueError):
        Lamb(p, lr=0.0)
    with pytest.raises(ValueError):
        Lamb(p, betas=(1.0, 0.9))
