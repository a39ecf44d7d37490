"""DiSa's directional regularisation (Alipour Talemi et al., "DiSa: directional saliency-aware prompt
learning for generalizable vision-language models", arXiv 2025).

Each point's feature should point the way of its class prototype: 1 - cos(f_i, mu_{y_i}), a constraint on
direction rather than distance.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from geot.labels import NUM_CLASSES
from geot.modules import LossTerm, StepContext, register
from geot.modules.common import labelled_and_confident, zero_loss
from geot.modules.state import ClassMeans


def direction_loss(feats: Tensor, prototypes: Tensor) -> Tensor:
    """Per point 1 - cos(f_i, mu_{y_i}) for rows of matching prototypes (no gradient into them)."""
    return 1 - F.cosine_similarity(feats, prototypes.detach(), dim=-1)


@register
class DirectionalPrototypeReg(LossTerm):
    """Directional pull of each point's feature towards its class prototype: mean (1 - cos(f_i, mu_{y_i})).

    Over labelled and confident unlabelled points. mu_c: EMA (0.9 per step) of the class means of the
    labelled points' features, from the frozen student with ``use_frozen_student`` (as DiSa uses the frozen
    model), else from the student (detached). lambda (the weight) is not verified; 1.0 here.
    """

    name = "disa"

    def __init__(self, weight: float = 1.0, schedule=None, threshold: float = 0.7, momentum: float = 0.9,
                 use_frozen_student: bool = False, num_classes: int = NUM_CLASSES) -> None:
        super().__init__(weight, schedule)
        self.threshold, self.needs_frozen_student = threshold, use_frozen_student
        self.prototypes = ClassMeans(num_classes, momentum)

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        if ctx.lab is not None:
            from_frozen = self.needs_frozen_student and ctx.frozen is not None
            self.prototypes.update(ctx.frozen.feats_lab if from_frozen else ctx.lab.feats, ctx.lab.labels)
        feats, labels = labelled_and_confident(ctx, self.threshold)
        if feats is None or self.prototypes.means.shape[1] != feats.shape[1]:
            return zero_loss(ctx), {}
        keep = self.prototypes.seen[labels]
        if not keep.any():
            return zero_loss(ctx), {}
        return direction_loss(feats[keep], self.prototypes.means[labels[keep]]).mean(), {}
