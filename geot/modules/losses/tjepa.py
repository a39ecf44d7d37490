"""An anti-collapse regulariser standing in for T-JEPA's regularisation tokens (Thimonier et al., "T-JEPA:
augmentation-free self-supervised learning for tabular data", ICLR 2025).

VICReg-style variance and covariance terms that keep the point features from collapsing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from geot.modules import LossTerm, StepContext, register
from geot.modules.common import random_perm, zero_loss


def variance_covariance(feats: Tensor, target_std: float = 1.0) -> tuple[Tensor, Tensor]:
    """VICReg's terms: mean_j relu(gamma - std_j) and sum_{i != j} cov_ij^2 / D."""
    centred = feats - feats.mean(0)
    std = torch.sqrt(centred.var(0) + 1e-4)
    variance = F.relu(target_std - std).mean()
    cov = centred.T @ centred / max(len(feats) - 1, 1)
    off = cov - torch.diag(cov.diagonal())
    return variance, (off ** 2).sum() / feats.shape[1]


@register
class AntiCollapseReg(LossTerm):
    """Variance and covariance terms that keep the point features from collapsing.

    The generic form of T-JEPA's regularisation tokens: T-JEPA appends learnable [REG] tokens to a token
    encoder so its embeddings do not collapse; geot's backbones are not token models, so the goal is written
    as VICReg's variance hinge (std >= 1 per channel) plus ``covariance`` (0.04 = VICReg's 1/25 ratio) x the
    off-diagonal covariance, on up to ``sample`` point features of the step. Weight 0.1; none of these
    numbers is from T-JEPA.
    """

    name = "collapse_reg"

    def __init__(self, weight: float = 0.1, schedule=None, target_std: float = 1.0, covariance: float = 0.04,
                 sample: int = 1024) -> None:
        super().__init__(weight, schedule)
        self.target_std, self.covariance, self.sample = target_std, covariance, sample

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        parts = [part.feats for part in (ctx.lab, ctx.unl) if part is not None]
        if not parts or sum(len(f) for f in parts) < 2:
            return zero_loss(ctx), {}
        feats = torch.cat(parts)
        feats = feats[random_perm(len(feats), feats.device)[: self.sample]]
        variance, covariance = variance_covariance(feats, self.target_std)
        return variance + self.covariance * covariance, {"variance": variance.item()}
