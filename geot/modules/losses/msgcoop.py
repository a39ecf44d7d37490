"""MSGCoOp's diversity regularisation (Wang et al., "MSGCoOp: multiple semantic-guided context optimization
for few-shot learning", arXiv 2025), on auxiliary heads.

K extra linear heads on the point features, trained with cross-entropy, whose per-class weight vectors are
kept apart by (1/C) sum_c mean_{i<j} cos^2(w_c^i, w_c^j); their disagreement is then an uncertainty signal
(``HeadDiversityReg.disagreement``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geot.labels import NUM_CLASSES
from geot.modules import LossTerm, StepContext, register
from geot.modules.common import labelled_and_confident, normalise, zero_loss


def diversity_penalty(weights: Tensor) -> Tensor:
    """(K, C, D) head weights -> mean over classes of the mean squared cosine over head pairs i < j."""
    unit = normalise(weights)
    cos = torch.einsum("icd,jcd->cij", unit, unit)
    k = weights.shape[0]
    upper = torch.triu(torch.ones(k, k, dtype=torch.bool, device=weights.device), diagonal=1)
    return (cos[:, upper] ** 2).mean()


@register
class HeadDiversityReg(LossTerm):
    """Auxiliary linear heads trained with cross-entropy and kept apart by a squared-cosine penalty.

    Mean CE of 4 auxiliary heads on labelled and confident points plus ``diversity`` x the penalty. MSGCoOp
    uses 4 parallel prompts and sets the weights on the command line (no default): diversity = 1 here, not
    verified.
    """

    name = "head_diversity"

    def __init__(self, weight: float = 1.0, schedule=None, heads: int = 4, diversity: float = 1.0,
                 threshold: float = 0.7, feat_dim: int = 256,
                 num_classes: int = NUM_CLASSES) -> None:
        super().__init__(weight, schedule)
        self.diversity, self.threshold = diversity, threshold
        self.heads = nn.Parameter(torch.randn(heads, num_classes, feat_dim) / feat_dim ** 0.5)
        self.bias = nn.Parameter(torch.zeros(heads, num_classes))

    def logits(self, feats: Tensor) -> Tensor:
        """(K, P, C) logits of every auxiliary head."""
        return torch.einsum("pd,kcd->kpc", feats, self.heads) + self.bias[:, None, :]

    @torch.no_grad()
    def disagreement(self, feats: Tensor) -> Tensor:
        """Per point, the mean total-variation distance of each head's posterior to the heads' mean."""
        probs = torch.softmax(self.logits(feats), dim=-1)
        return 0.5 * (probs - probs.mean(0)).abs().sum(-1).mean(0)

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        penalty = diversity_penalty(self.heads)
        feats, labels = labelled_and_confident(ctx, self.threshold)
        if feats is None:
            return self.diversity * penalty + zero_loss(ctx), {"diversity": penalty.item()}
        logits = self.logits(feats)
        ce = F.cross_entropy(logits.flatten(0, 1), labels.repeat(len(logits)))
        return ce + self.diversity * penalty, {"diversity": penalty.item(), "heads_ce": ce.item()}
