"""Which unlabelled scans to annotate next (adaptive margin selection, after AGCD, Ma et al. 2024)."""

from __future__ import annotations

import torch
from torch import Tensor

from geot.addons.base import ScanSelector, register


def scan_margin(probs: Tensor) -> Tensor:
    """Mean top-2 margin over the points predicted as teeth (all points if none)."""
    top2 = probs.topk(2, dim=1).values
    margin = top2[:, 0] - top2[:, 1]
    teeth = probs.argmax(dim=1) > 0
    return margin[teeth].mean() if teeth.any() else margin.mean()


@register
class AdaptiveMarginSelector(ScanSelector):
    """Selector ``margin``: early rounds take confident scans (representative), later rounds unsure ones.

    Score per scan: +mean margin when ``round < switch_round``, -mean margin afterwards; scans predicted
    to hold a third molar (rare classes) get ``rare_bonus`` so the labelled set covers them.
    """

    name = "margin"

    def __init__(self, weight: float = 1.0, schedule=None, round: int = 2, switch_round: int = 2,
                 rare_classes: tuple[int, ...] = (8, 16), rare_fraction: float = 0.02, rare_bonus: float = 1.0) -> None:
        super().__init__(weight, schedule)
        self.round, self.switch_round = round, switch_round
        self.rare_classes, self.rare_fraction, self.rare_bonus = rare_classes, rare_fraction, rare_bonus

    def forward(self, probs: list[Tensor], features: list[Tensor] | None = None) -> Tensor:
        sign = 1.0 if self.round < self.switch_round else -1.0
        scores = []
        for p in probs:
            predicted = p.argmax(dim=1)
            rare = sum((predicted == c).float().mean() for c in self.rare_classes) >= self.rare_fraction
            scores.append(sign * scan_margin(p) + self.rare_bonus * float(rare))
        return torch.stack([torch.as_tensor(s, dtype=torch.float32) for s in scores])
