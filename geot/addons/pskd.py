"""Progressive self-knowledge distillation (PS-KD, Kim et al. 2021): soften targets with past predictions.

Target = (1 - a_e) * pseudo label + a_e * the student's prediction for the same point in the previous
epoch, with a_e growing linearly to ``alpha_t``: the model's own history tempers hard, noisy labels.
"""

from __future__ import annotations

import torch
from torch import Tensor

from geot.addons.base import PointMemory, StepContext, TargetTransform, register


@register
class ProgressiveSoftTargets(TargetTransform):
    """Target transform ``pskd``; state: the last prediction of every unlabelled point."""

    name = "pskd"

    def __init__(self, weight: float = 1.0, schedule=None, alpha_t: float = 0.8, num_classes: int = 17) -> None:
        super().__init__(weight, schedule)
        self.alpha_t = alpha_t
        self.memory = PointMemory(num_classes)

    def alpha(self, epoch: int, epochs: int) -> float:
        return self.alpha_t * (epoch + 1) / epochs

    def forward(self, ctx: StepContext, targets: Tensor) -> Tensor:
        index = ctx.point_index.cpu()
        previous, seen = self.memory.get(index)
        self.memory.set(index, torch.softmax(ctx.logits.detach(), dim=1).cpu())
        previous = torch.where(seen[:, None], previous, targets.cpu()).to(targets)  # unseen: the label itself
        a = self.alpha(ctx.epoch, ctx.epochs)
        return (1 - a) * targets + a * previous
