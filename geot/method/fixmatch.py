"""FixMatch (Sohn et al., NeurIPS 2020): the student's confident weak-view labels teach its strong view."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from geot.method.base import METHODS, Method
from geot.method.losses import masked_mean, soft_cross_entropy

if TYPE_CHECKING:
    from geot.config import Config


@METHODS.register
class FixMatch(Method):
    """Cross-entropy on hard pseudo labels whose confidence reaches ``threshold`` (``semi.threshold``, 0.9)."""

    name = "fixmatch"

    def __init__(self, threshold: float = 0.9) -> None:
        super().__init__()
        self.threshold = threshold

    @classmethod
    def from_config(cls, cfg: Config) -> FixMatch:
        return cls(0.9 if cfg.semi.threshold is None else cfg.semi.threshold)

    def forward(self, logits: Tensor, probs_weak: Tensor, targets: Tensor, raw_pos: Tensor, batch: Tensor,
                weight: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        mask = (probs_weak.max(dim=1).values >= self.threshold).to(logits.dtype)
        mask = mask if weight is None else mask * weight
        loss = masked_mean(soft_cross_entropy(logits, targets), mask)
        return loss, {"pseudo": loss.item(), "mask": mask.mean().item()}
