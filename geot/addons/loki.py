"""Loki (Fréchet-mean prediction): choose the class that minimises the expected squared tooth distance.

When the model hesitates between two teeth two positions apart, the tooth between them costs less
than either guess; under a 0/1 metric the rule is argmax.
"""

from __future__ import annotations

import torch
from torch import Tensor

from geot.addons.base import PredictionRule, TargetTransform, register
from geot.addons.metric import tooth_metric


def frechet_mean(probs: Tensor, metric: Tensor, power: float = 2.0) -> Tensor:
    """argmin_k sum_c p_c D[k, c]^power for each row of ``probs``."""
    return (probs @ (metric.to(probs) ** power).T).argmin(dim=1)


@register
class LokiRule(PredictionRule):
    """Prediction rule ``loki``: Fréchet mean of the posterior under the tooth metric."""

    name = "loki"

    def __init__(self, weight: float = 1.0, schedule=None, mirror: float = 1.0, gingiva: float = 8.0,
                 power: float = 2.0) -> None:
        super().__init__(weight, schedule)
        self.power = power
        self.register_buffer("metric", torch.as_tensor(tooth_metric(mirror, gingiva), dtype=torch.float32))

    def forward(self, probs: Tensor) -> Tensor:
        return frechet_mean(probs, self.metric, self.power)


@register
class LokiTargets(TargetTransform):
    """Target transform ``loki_targets``: pseudo labels decoded as Fréchet means instead of argmax."""

    name = "loki_targets"

    def __init__(self, weight: float = 1.0, schedule=None, mirror: float = 1.0, gingiva: float = 8.0) -> None:
        super().__init__(weight, schedule)
        self.register_buffer("metric", torch.as_tensor(tooth_metric(mirror, gingiva), dtype=torch.float32))

    def forward(self, ctx, targets: Tensor) -> Tensor:
        labels = frechet_mean(ctx.probs_teacher, self.metric)
        return torch.nn.functional.one_hot(labels, targets.shape[1]).to(targets)
