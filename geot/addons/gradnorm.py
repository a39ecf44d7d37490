"""Gradient-norm regularisers, written as loss terms with double back-propagation.

* ``grad_norm_constraint`` (IGNITE): the constraint rho ||grad_f G|| <= eps on a surrogate G (here the
  summed max-class confidence of the head on the unlabelled points' features f), enforced by a Lagrangian:
  the term is lambda rho ||grad_f G|| and, after each step, lambda <- max(0, lambda + eta (rho ||grad G|| - eps)).
  IGNITE approximates grad ||grad G|| = H grad G / ||grad G|| by a finite difference of two gradients and
  applies it to the weights through its optimiser; here autograd differentiates ||grad_f G|| exactly, and
  the gradient reaches the head and (through f) the backbone.
* ``gradient_norm_penalty`` (GLAD, generic form): rho ||grad_theta L|| over the head's parameters theta,
  L the step's supervised plus confident pseudo-label cross-entropy. Its gradient is the GNP update
  grad L + rho (grad L(theta + r u) - grad L(theta)) / r in the limit r -> 0. GLAD's exact regulariser was
  not verified; the head stands in for its LoRA parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geot.addons.base import LossTerm, StepContext, register
from geot.addons.common import pseudo_labels, zero_loss


@register
class GradNormConstraint(LossTerm):
    """Loss ``grad_norm_constraint``: eps = 0.1, lambda_0 = 1e-3, eta = 1e-3, rho = 0.05 (IGNITE's scripts);
    lambda is clamped at 0 (IGNITE's code lets it go negative). ||grad_f G|| is the root mean square over
    points of the per-point gradient norm, so it does not grow with the number of points."""

    name = "grad_norm_constraint"

    def __init__(self, weight: float = 1.0, schedule=None, epsilon: float = 0.1, rho: float = 0.05,
                 lambda_init: float = 1e-3, dual_lr: float = 1e-3) -> None:
        super().__init__(weight, schedule)
        self.epsilon, self.rho, self.dual_lr = epsilon, rho, dual_lr
        self.register_buffer("lam", torch.tensor(float(lambda_init)))

    def surrogate(self, feats: Tensor, head: nn.Module) -> Tensor:
        """G: the summed max-class probability of the head on ``feats``."""
        return torch.softmax(head(feats), dim=1).max(dim=1).values.sum()

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        if ctx.feats is None or ctx.head is None:
            return zero_loss(ctx), {}
        feats = ctx.feats if ctx.feats.requires_grad else ctx.feats.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(self.surrogate(feats, ctx.head), feats, create_graph=True)
        norm = grad.pow(2).sum(dim=1).mean().add(1e-12).sqrt()
        loss = self.lam * self.rho * norm
        with torch.no_grad():
            self.lam.copy_((self.lam + self.dual_lr * (self.rho * norm - self.epsilon)).clamp(min=0))
        return loss, {"grad_norm": norm.item(), "lambda": self.lam.item()}


def task_loss(ctx: StepContext, threshold: float) -> Tensor | None:
    """Supervised CE plus CE on confident pseudo labels, over whatever of the two carries a gradient."""
    terms = []
    if ctx.logits_lab is not None and ctx.logits_lab.requires_grad and ctx.labels is not None:
        terms.append(F.cross_entropy(ctx.logits_lab, ctx.labels, reduction="sum"))
    if ctx.logits is not None and ctx.logits.requires_grad and ctx.probs_teacher is not None:
        pseudo, mask = pseudo_labels(ctx, threshold)
        if mask.any():
            terms.append(F.cross_entropy(ctx.logits[mask], pseudo[mask], reduction="sum"))
    if not terms:
        return None
    count = sum(len(t) for t in (ctx.labels, ctx.logits) if t is not None)
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
    """Loss ``gradient_norm_penalty``: rho = 0.05 (GNP's usual value; not verified for GLAD)."""

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
