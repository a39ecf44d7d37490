"""Loki's Fréchet-mean decoding applied to pseudo labels (Roberts et al., "Geometry-aware adaptation for
pretrained models", NeurIPS 2023).

The teacher's posterior is decoded as the class with the least expected squared tooth distance instead of
its argmax, so a teacher torn between two teeth two places apart labels the tooth between them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from geot.modules import StepContext, TargetTransform, register
from geot.modules.metric import tooth_metric
from geot.modules.rules.loki import frechet_mean


@register
class LokiTargets(TargetTransform):
    """Pseudo labels decoded as Fréchet means under the tooth metric instead of argmax."""

    name = "loki_targets"

    def __init__(self, weight: float = 1.0, schedule=None, mirror: float = 1.0, gingiva: float = 8.0) -> None:
        super().__init__(weight, schedule)
        self.register_buffer("metric", torch.as_tensor(tooth_metric(mirror, gingiva), dtype=torch.float32))

    def forward(self, ctx: StepContext, targets: Tensor) -> Tensor:
        labels = frechet_mean(ctx.unl.probs_teacher, self.metric)
        return F.one_hot(labels, targets.shape[1]).to(targets)
