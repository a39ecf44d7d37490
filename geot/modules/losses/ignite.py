"""IGNITE's surrogate gradient-norm constraint (Dao et al., "Incorporating surrogate gradient norm to
improve offline optimization techniques", NeurIPS 2024), as a loss term with double back-propagation.

The constraint rho ||grad_f G|| <= eps on a surrogate G (here the summed max-class confidence of the head
on the unlabelled points' features f) is enforced by a Lagrangian: the term is lambda rho ||grad_f G|| and,
after each step, lambda <- max(0, lambda + eta (rho ||grad G|| - eps)). IGNITE approximates
grad ||grad G|| = H grad G / ||grad G|| by a finite difference of two gradients and applies it to the
weights through its optimiser; here autograd differentiates ||grad_f G|| exactly, and the gradient reaches
the head and (through f) the backbone.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from geot.modules import LossTerm, StepContext, register
from geot.modules.common import zero_loss


@register
class GradNormConstraint(LossTerm):
    """Lagrangian constraint on the gradient norm of the head's confidence w.r.t. the point features.

    eps = 0.1, lambda_0 = 1e-3, eta = 1e-3, rho = 0.05 (IGNITE's scripts); lambda is clamped at 0
    (IGNITE's code lets it go negative). ||grad_f G|| is the root mean square over points of the per-point
    gradient norm, so it does not grow with the number of points.
    """

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
        if ctx.unl is None or ctx.head is None:
            return zero_loss(ctx), {}
        feats = ctx.unl.feats if ctx.unl.feats.requires_grad else ctx.unl.feats.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(self.surrogate(feats, ctx.head), feats, create_graph=True)
        norm = grad.pow(2).sum(dim=1).mean().add(1e-12).sqrt()
        loss = self.lam * self.rho * norm
        with torch.no_grad():
            self.lam.copy_((self.lam + self.dual_lr * (self.rho * norm - self.epsilon)).clamp(min=0))
        return loss, {"grad_norm": norm.item(), "lambda": self.lam.item()}
