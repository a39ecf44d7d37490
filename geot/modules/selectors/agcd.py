"""Adaptive margin selection of scans to annotate, after AGCD (Ma et al., "Active generalized category
discovery", CVPR 2024).

Early rounds take confident scans (representative), later rounds unsure ones, and scans that seem to hold
rare teeth come first, so the labelled set covers them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from geot.modules import ScanSelector, register
from geot.modules.metric import tooth_metric


def scan_loki_certainty(probs: Tensor, metric: Tensor) -> Tensor:
    """Minus the mean expected Loki cost sum_c p_c D(y^, c)^2 (y^ the Fréchet mean) over tooth points:
    near 0 when sure; confusing distant teeth costs more than confusing neighbours."""
    d2 = metric.to(probs) ** 2
    cost = probs @ d2.T                      # (V, K): expected cost of answering k
    best, predicted = cost.min(dim=1)
    teeth = predicted > 0
    return -(best[teeth].mean() if teeth.any() else best.mean())


def scan_margin(probs: Tensor) -> Tensor:
    """Mean top-2 margin over the points predicted as teeth (all points if none)."""
    top2 = probs.topk(2, dim=1).values
    margin = top2[:, 0] - top2[:, 1]
    teeth = probs.argmax(dim=1) > 0
    return margin[teeth].mean() if teeth.any() else margin.mean()


@register
class AdaptiveMarginSelector(ScanSelector):
    """Scans to annotate: confident ones in early rounds, unsure ones later, rare teeth first.

    Score per scan: +mean margin when ``round < switch_round``, -mean margin afterwards; scans predicted
    to hold a third molar (rare classes) get ``rare_bonus`` so the labelled set covers them. With
    ``score: loki`` the certainty is minus the expected Loki cost under the tooth metric instead of the
    margin (AGCD's adaptation for a label metric).
    """

    name = "margin"

    def __init__(self, weight: float = 1.0, schedule=None, round: int = 2, switch_round: int = 2,
                 rare_classes: tuple[int, ...] = (8, 16), rare_fraction: float = 0.02, rare_bonus: float = 1.0,
                 score: str = "margin") -> None:
        super().__init__(weight, schedule)
        if score not in ("margin", "loki"):
            raise ValueError(f"score must be margin or loki, not {score!r}")
        self.round, self.switch_round, self.score = round, switch_round, score
        self.rare_classes, self.rare_fraction, self.rare_bonus = rare_classes, rare_fraction, rare_bonus
        self.register_buffer("metric", torch.as_tensor(tooth_metric(), dtype=torch.float32))

    def certainty(self, probs: Tensor) -> Tensor:
        return scan_margin(probs) if self.score == "margin" else scan_loki_certainty(probs, self.metric)

    def forward(self, probs: list[Tensor], features: list[Tensor] | None = None) -> Tensor:
        sign = 1.0 if self.round < self.switch_round else -1.0
        scores = []
        for p in probs:
            predicted = p.argmax(dim=1)
            rare = sum((predicted == c).float().mean() for c in self.rare_classes) >= self.rare_fraction
            scores.append(sign * self.certainty(p) + self.rare_bonus * float(rare))
        return torch.stack([torch.as_tensor(s, dtype=torch.float32) for s in scores])
