"""LAMB (You et al., "Large Batch Optimization for Deep Learning", 2019), the paper's optimiser.

This is `torch_optimizer.Lamb` (the implementation CLIP2Point's reference code trains with),
step for step, with its defaults. Per parameter tensor p with gradient g:

    m <- beta1 m + (1 - beta1) g            v <- beta2 v + (1 - beta2) g^2
    u  = m / (sqrt(v) + eps) + weight_decay * p
    trust = min(||p||, clamp_value) / ||u||  (1 where either norm is 0)
    p <- p - lr * c * trust * u

with c = 1 by default (`bias_correction=False`: the moments are not debiased, as in the paper's
v3 and in torch_optimizer's default `debias=False`) and c = sqrt(1 - beta2^t) / (1 - beta1^t)
with `bias_correction=True` (torch_optimizer's `debias=True`). The weight norm is clamped at
`clamp_value` (10 by default, torch_optimizer's default; None disables the clamp), so a large
tensor's step is at most lr * 10 * ||u|| / ||u||. Weight decay is decoupled and lives inside the
trust ratio. The state is plain tensors (`step`, `exp_avg`, `exp_avg_sq`), so it goes into
safetensors checkpoints like AdamW's.
"""

from __future__ import annotations

import math

import torch
from torch.optim import Optimizer


class Lamb(Optimizer):
    """Layer-wise Adaptive Moments optimiser for Batch training (torch_optimizer.Lamb's update rule).

    `clamp_value`: upper bound of the weight norm in the trust ratio (None: unbounded).
    `bias_correction`: debias the moments through the step size (torch_optimizer's `debias`).
    `adam=True` skips the trust ratio (plain Adam with decoupled weight decay), for comparison.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        clamp_value: float | None = 10.0,
        bias_correction: bool = False,
        adam: bool = False,
    ):
        if lr <= 0.0:
            raise ValueError(f"invalid learning rate {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"invalid betas {betas}")
        if eps <= 0.0 or weight_decay < 0.0:
            raise ValueError(f"invalid eps {eps} or weight decay {weight_decay}")
        if clamp_value is not None and clamp_value <= 0.0:
            raise ValueError(f"invalid clamp value {clamp_value}")
        super().__init__(params, {
            "lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
            "clamp_value": clamp_value, "bias_correction": bias_correction, "adam": adam,
        })

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            # Groups restored from checkpoints written before these options existed get the defaults.
            clamp_value = group.get("clamp_value", self.defaults["clamp_value"])
            debias = group.get("bias_correction", self.defaults["bias_correction"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.float()
                if grad.is_sparse:
                    raise RuntimeError("Lamb does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                state["step"] += 1
                step = float(state["step"])
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                step_size = group["lr"]
                if debias:
                    step_size *= math.sqrt(1.0 - beta2**step) / (1.0 - beta1**step)
                update = exp_avg / (exp_avg_sq.sqrt() + group["eps"])
                if group["weight_decay"]:
                    update.add_(p.float(), alpha=group["weight_decay"])
                if not group["adam"]:
                    # Tensor ops, not .item(): no host sync per parameter on GPUs.
                    w_norm, u_norm = p.float().norm(), update.norm()
                    if clamp_value is not None:
                        w_norm = w_norm.clamp(0.0, clamp_value)
                    trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                    update.mul_(trust)
                p.add_(update.to(p.dtype), alpha=-step_size)
        return loss
