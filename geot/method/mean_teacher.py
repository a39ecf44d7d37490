"""Mean teacher (Tarvainen & Valpola, NeurIPS 2017): the student matches an EMA teacher's posteriors."""

from __future__ import annotations

import torch
from torch import Tensor

from geot.method.base import METHODS, Method
from geot.method.losses import masked_mean


@METHODS.register
class MeanTeacher(Method):
    """Consistency: squared distance between the student's posteriors and the teacher's, per point."""

    name = "mean_teacher"
    needs_teacher = True
    hard_targets = False

    def forward(self, logits: Tensor, probs_weak: Tensor, targets: Tensor, raw_pos: Tensor, batch: Tensor,
                weight: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        loss = masked_mean(((torch.softmax(logits, dim=1) - targets) ** 2).sum(dim=1), weight)
        return loss, {"consistency": loss.item()}
