"""Early-learning regularisation (ELR, Liu et al. 2020): keep predictions near their own running average.

Networks fit clean labels before noisy ones; a per-point EMA of the early predictions (the target t)
and the term ``log(1 - <t, p>)`` hold the student to what it learned first, so noisy pseudo labels are
memorised later, if at all.
"""

from __future__ import annotations

import torch
from torch import Tensor

from geot.addons.base import LossTerm, PointMemory, StepContext, register


@register
class EarlyLearningReg(LossTerm):
    """Loss term ``elr`` on the clean posterior of unlabelled points; state: one target per point."""

    name = "elr"
    on_unlabelled = True

    def __init__(self, weight: float = 3.0, schedule=None, beta: float = 0.7, num_classes: int = 17) -> None:
        super().__init__(weight, schedule)
        self.beta = beta
        self.memory = PointMemory(num_classes)

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        if ctx.logits is None:
            return ctx.logits_lab.sum() * 0, {}
        probs = torch.softmax(ctx.logits, dim=1)
        with torch.no_grad():
            clamped = probs.clamp(1e-4, 1 - 1e-4)
            clamped = clamped / clamped.sum(dim=1, keepdim=True)
            previous, seen = self.memory.get(ctx.point_index.cpu())
            previous = previous.to(probs)
            target = torch.where(seen.to(probs.device)[:, None], self.beta * previous + (1 - self.beta) * clamped,
                                 clamped)
            self.memory.set(ctx.point_index.cpu(), target.cpu())
        agreement = (target * probs).sum(dim=1)
        loss = torch.log((1 - agreement).clamp(min=1e-4)).mean()
        return loss, {"agreement": agreement.mean().item()}
