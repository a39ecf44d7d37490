"""Loki: Fréchet-mean prediction (Roberts et al., "Geometry-aware adaptation for pretrained models",
NeurIPS 2023).

Choose the class that minimises the expected squared tooth distance under the posterior: when the model
hesitates between two teeth two positions apart, the tooth between them costs less than either guess;
under a 0/1 metric the rule is argmax.
"""

from __future__ import annotations

import torch
from torch import Tensor

from geot.modules import PredictionRule, register
from geot.modules.metric import tooth_metric


def frechet_mean(probs: Tensor, metric: Tensor, power: float = 2.0) -> Tensor:
    """argmin_k sum_c p_c D[k, c]^power for each row of ``probs``."""
    return (probs @ (metric.to(probs) ** power).T).argmin(dim=1)


@register
class LokiRule(PredictionRule):
    """The Fréchet mean of each posterior under the tooth metric (argmax under a 0/1 metric)."""

    name = "loki"

    def __init__(self, weight: float = 1.0, schedule=None, mirror: float = 1.0, gingiva: float = 8.0,
                 power: float = 2.0) -> None:
        super().__init__(weight, schedule)
        self.power = power
        self.register_buffer("metric", torch.as_tensor(tooth_metric(mirror, gingiva), dtype=torch.float32))

    def forward(self, probs: Tensor) -> Tensor:
        return frechet_mean(probs, self.metric, self.power)
