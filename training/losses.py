"""Contrastive losses of CLIP2Point's image-depth pre-training.

`nt_xent` is SimCLR's normalised temperature-scaled cross entropy (the `lightly` NTXentLoss the
authors used, without a memory bank): the 2N features of two aligned batches are compared with
each other; for each of them the positive is its partner in the other batch and the negatives are
the other 2N - 2 features (of both batches). The loss is the mean over the 2N rows.

`BalancedPretrainLoss` combines the intra-modality term NT-Xent(f_d1, f_d2) and the
cross-modality term NT-Xent((f_d1 + f_d2) / 2, f_img) with the paper's learnable balance weight:

    total = L_cross + L_intra / w^2 + log(w + 1),   w initialised to 1.

Under torch.distributed (world size R > 1), features are gathered from all ranks before the
loss, so the negatives span the global batch (R x local batch). Every rank computes the same
global loss; gradients flow back only through its own slice, scaled by R, so that DDP's gradient
averaging yields exactly the gradient of the global loss (see `gather_with_grad`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

TEMPERATURE = 0.07


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """NT-Xent between two aligned batches a[N, D] and b[N, D] (row i of a matches row i of b).

    Features are L2-normalised here; the result is a float32 scalar (mean over the 2N rows).
    Needs N >= 2 (one positive and at least one negative per row).
    """
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"nt_xent needs two [N, D] tensors of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    n = a.shape[0]
    if n < 2:
        raise ValueError("nt_xent needs a batch of at least 2 pairs (the other pairs are the negatives)")
    z = F.normalize(torch.cat([a, b]).float(), dim=-1)
    logits = z @ z.t() / temperature
    # A feature is neither its own positive nor its own negative.
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, target)


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; multiplies the gradient by a constant in backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate x[N, D] from all ranks (rank order); identity when not distributed.

    The other ranks' slices are constants; the own slice keeps its graph, with its gradient scaled
    by the world size R. Every rank computes the same loss L on the gathered batch, so the local
    gradient is dL/dx_own * R and DDP's average over ranks gives sum_r dL/dx_r * dx_r/dtheta, the
    exact gradient of L. Plain `all_gather` is used (not the autograd-aware one) because gloo has
    no reduce-scatter; all ranks must hold the same N.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    world, rank = dist.get_world_size(), dist.get_rank()
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[rank] = _ScaleGrad.apply(x, float(world))
    return torch.cat(parts)


class BalancedPretrainLoss(nn.Module):
    """L_cross + L_intra / w^2 + log(w + 1) with a learnable scalar w (initially 1).

    `forward(f_d1, f_d2, f_img)` takes unnormalised features [N, D] of the two depth renders and
    of the images (detached here: the image encoder is frozen) and returns a dict with `loss`,
    `loss_intra`, `loss_cross` (float32 scalars; the last two detached) and `w`.
    """

    def __init__(self, temperature: float = TEMPERATURE, init_weight: float = 1.0):
        super().__init__()
        self.temperature = temperature
        self.w = nn.Parameter(torch.tensor(float(init_weight)))

    def forward(self, f_d1: torch.Tensor, f_d2: torch.Tensor, f_img: torch.Tensor) -> dict[str, torch.Tensor]:
        f_d1, f_d2 = gather_with_grad(f_d1.float()), gather_with_grad(f_d2.float())
        f_img = gather_with_grad(f_img.detach().float())
        loss_intra = nt_xent(f_d1, f_d2, self.temperature)
        loss_cross = nt_xent((f_d1 + f_d2) * 0.5, f_img, self.temperature)
        w = self.w.float()
        total = loss_cross + loss_intra / (w * w) + torch.log(w + 1.0)
        return {
            "loss": total,
            "loss_intra": loss_intra.detach(),
            "loss_cross": loss_cross.detach(),
            "w": w.detach(),
        }
