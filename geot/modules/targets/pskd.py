"""PS-KD: progressive self-knowledge distillation (Kim et al., ICCV 2021).

Target = (1 - a_e) * pseudo label + a_e * the student's prediction for the same point in the previous
epoch, with a_e growing linearly to ``alpha_t``: the model's own history tempers hard, noisy labels.
"""

from __future__ import annotations

import torch
from torch import Tensor

from geot.labels import NUM_CLASSES
from geot.modules import StepContext, TargetTransform, register
from geot.modules.state import PointMemory


@register
class ProgressiveSoftTargets(TargetTransform):
    """Pseudo labels blended with each point's prediction from the previous epoch, more so as training goes.

    alpha_T 0.8; state: the last prediction of every unlabelled point.
    """

    name = "pskd"

    def __init__(self, weight: float = 1.0, schedule=None, alpha_t: float = 0.8,
                 num_classes: int = NUM_CLASSES) -> None:
        super().__init__(weight, schedule)
        self.alpha_t = alpha_t
        self.memory = PointMemory(num_classes)

    def alpha(self, epoch: int, epochs: int) -> float:
        return self.alpha_t * (epoch + 1) / epochs

    def forward(self, ctx: StepContext, targets: Tensor) -> Tensor:
        index = ctx.unl.point_index.cpu()
        previous, seen = self.memory.get(index)
        self.memory.set(index, torch.softmax(ctx.unl.logits.detach(), dim=1).cpu())
        previous = torch.where(seen[:, None], previous, targets.cpu()).to(targets)  # unseen: the label itself
        a = self.alpha(ctx.epoch, ctx.epochs)
        return (1 - a) * targets + a * previous
