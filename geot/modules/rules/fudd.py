"""Ambiguity-triggered re-ranking, after FuDD (Esfandiarpoor & Bach, "Follow-up differential descriptions:
language models resolve ambiguities for image classification", ICLR 2024).

FuDD re-decides only the ambiguous inputs, among their top-k classes, with evidence written for exactly
those classes (LLM descriptions of their differences). Without a language model, the evidence specific
to a set of teeth is their place on the arch: an ambiguous point (top-2 margin below ``delta``) takes the
Fréchet mean of its posterior restricted to its top-k classes under the tooth metric (Loki's rule on the
ambiguous set), so a hesitation between two teeth two places apart resolves to the one in between only
when that tooth is itself a candidate. Confident points keep their argmax.
"""

from __future__ import annotations

import torch
from torch import Tensor

from geot.modules import PredictionRule, register
from geot.modules.metric import tooth_metric


def ambiguity_rerank(probs: Tensor, metric: Tensor, delta: float = 0.2, k: int = 3, power: float = 2.0) -> Tensor:
    """argmax where the top-2 margin is >= ``delta``; else argmin over the top-k classes c' of
    sum_{c in top-k} p_c D[c', c]^power."""
    labels = probs.argmax(dim=1)
    top = probs.topk(min(k, probs.shape[1]), dim=1)
    ambiguous = (top.values[:, 0] - top.values[:, 1]) < delta
    if not ambiguous.any():
        return labels
    idx, p = top.indices[ambiguous], top.values[ambiguous]
    d = metric.to(probs)[idx[:, :, None], idx[:, None, :]] ** power  # (A, k, k): candidate x class
    labels[ambiguous] = idx.gather(1, (d @ p[:, :, None]).squeeze(2).argmin(dim=1, keepdim=True)).squeeze(1)
    return labels


@register
class AmbiguityTriggeredRerank(PredictionRule):
    """Ambiguous points (small top-2 margin) re-decided among their top-k classes by the tooth metric.

    delta = 0.2, k = 3 (not from FuDD, which uses language evidence).
    """

    name = "rerank"

    def __init__(self, weight: float = 1.0, schedule=None, delta: float = 0.2, k: int = 3, power: float = 2.0,
                 mirror: float = 1.0, gingiva: float = 8.0) -> None:
        super().__init__(weight, schedule)
        self.delta, self.k, self.power = delta, k, power
        self.register_buffer("metric", torch.as_tensor(tooth_metric(mirror, gingiva), dtype=torch.float32))

    def forward(self, probs: Tensor) -> Tensor:
        return ambiguity_rerank(probs, self.metric, self.delta, self.k, self.power)
