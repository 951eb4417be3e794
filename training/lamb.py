"""LAMB (You et al., "Large Batch Optimization for Deep Learning", 2019), the paper's optimiser.

Per parameter tensor: Adam moments with bias correction give the update
    u = m_hat / (sqrt(v_hat) + eps) + weight_decay * p
and the step is scaled by the trust ratio ||p|| / ||u|| (1 where either norm is 0):
    p <- p - lr * trust * u.
This is the variant of `torch_optimizer.Lamb` that CLIP2Point's reference run used (decoupled
weight decay inside the trust ratio, trust ratio not clamped). The state is plain tensors
(`step`, `exp_avg`, `exp_avg_sq`), so it goes into safetensors checkpoints like AdamW's.
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer


class Lamb(Optimizer):
    """Layer-wise Adaptive Moments optimiser for Batch training.

    `adam=True` skips the trust ratio (plain Adam with decoupled weight decay), for comparison.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        adam: bool = False,
    ):
        if lr <= 0.0:
            raise ValueError(f"invalid learning rate {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"invalid betas {betas}")
        if eps <= 0.0 or weight_decay < 0.0:
            raise ValueError(f"invalid eps {eps} or weight decay {weight_decay}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay, "adam": adam})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
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
                m_hat = exp_avg / (1.0 - beta1**step)
                v_hat = exp_avg_sq / (1.0 - beta2**step)
                update = m_hat / (v_hat.sqrt() + group["eps"])
                if group["weight_decay"]:
                    update.add_(p.float(), alpha=group["weight_decay"])
                if not group["adam"]:
                    # Tensor ops, not .item(): no host sync per parameter on GPUs.
                    w_norm, u_norm = p.float().norm(), update.norm()
                    trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                    update.mul_(trust)
                p.add_(update.to(p.dtype), alpha=-group["lr"])
        return loss
