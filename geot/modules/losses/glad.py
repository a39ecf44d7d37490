"""A gradient-norm penalty in the spirit of GLAD (Peng et al., "GLAD: generalizable tuning for
vision-language models", arXiv 2025), as a loss term with double back-propagation.

rho ||grad_theta L|| over the head's parameters theta, L the step's supervised plus confident pseudo-label
cross-entropy. Its gradient is the gradient-norm-penalty update grad L + rho (grad L(theta + r u) -
grad L(theta)) / r in the limit r -> 0. GLAD's exact regulariser was not verified; the head stands in for
its LoRA parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from geot.modules import LossTerm, StepContext, register
from geot.modules.common import pseudo_labels, zero_loss


def task_loss(ctx: StepContext, threshold: float) -> Tensor | None:
    """Supervised CE plus CE on confident pseudo labels, over whatever of the two carries a gradient."""
    terms = []
    if ctx.lab is not None and ctx.lab.logits.requires_grad:
        terms.append(F.cross_entropy(ctx.lab.logits, ctx.lab.labels, reduction="sum"))
    if ctx.unl is not None and ctx.unl.logits.requires_grad:
        pseudo, mask = pseudo_labels(ctx.unl, threshold)
        if mask.any():
            terms.append(F.cross_entropy(ctx.unl.logits[mask], pseudo[mask], reduction="sum"))
    if not terms:
        return None
    count = sum(len(part.logits) for part in (ctx.lab, ctx.unl) if part is not None)
    return sum(terms) / max(count, 1)


def parameter_gradient_norm(loss: Tensor, params: list[Tensor]) -> Tensor | None:
    """||grad_theta loss|| with the graph kept (None when no parameter is reached)."""
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    grads = [g for g in grads if g is not None]
    if not grads:
        return None
    return torch.sqrt(sum((g ** 2).sum() for g in grads) + 1e-12)


@register
class GradientNormPenalty(LossTerm):
    """Penalty rho ||grad_theta L|| on the norm of the task loss's gradient over the head's parameters.

    rho = 0.05 (GNP's usual value; not verified for GLAD).
    """

    name = "gradient_norm_penalty"

    def __init__(self, weight: float = 1.0, schedule=None, rho: float = 0.05, threshold: float = 0.7) -> None:
        super().__init__(weight, schedule)
        self.rho, self.threshold = rho, threshold

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        if ctx.head is None or self.rho == 0:
            return zero_loss(ctx), {}
        loss = task_loss(ctx, self.threshold)
        params = [p for p in ctx.head.parameters() if p.requires_grad]
        norm = parameter_gradient_norm(loss, params) if loss is not None and params else None
        if norm is None:
            return zero_loss(ctx), {}
        return self.rho * norm, {"grad_norm": norm.item()}
