"""MMRL++'s shared residual adapters (Guo & Gu, arXiv 2025), as an auxiliary branch on the point features.

``SharedResidualAdapters`` is MMRL++'s construction: one shared linear map plus a rank-r residual per
layer, composed progressively, x_l = beta new_l + (1 - beta) x_{l-1} with new_l = A x_{l-1} + U_l V_l x_{l-1}.
It starts as the identity (A = I, U = 0).

``residual_adapters`` (a loss term) runs the features through the adapters and the model's head, and
trains that branch with cross-entropy on labelled and confident points: MMRL's (1 - alpha) CE(z_rep) next
to the main alpha CE(z_cls), hence weight (1 - 0.7) / 0.7. The branch is used only in training (geot's
prediction uses the plain head), so it acts as a regulariser of the shared head and backbone; built into a
backbone as a model option it would be the parameter-efficient fine-tuning MMRL++ does, which geot does
not offer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geot.modules import LossTerm, StepContext, register
from geot.modules.common import labelled_and_confident, zero_loss


class SharedResidualAdapters(nn.Module):
    """``layers`` adapter steps sharing one linear map, each with its own rank-``rank`` residual."""

    def __init__(self, dim: int, layers: int = 2, rank: int = 4, beta: float = 0.9) -> None:
        super().__init__()
        self.beta = beta
        self.shared = nn.Linear(dim, dim)
        with torch.no_grad():
            self.shared.weight.copy_(torch.eye(dim))
            self.shared.bias.zero_()
        self.down = nn.Parameter(torch.randn(layers, rank, dim) / dim ** 0.5)
        self.up = nn.Parameter(torch.zeros(layers, dim, rank))

    def step(self, x: Tensor, layer: int) -> Tensor:
        """new_l: the shared map plus layer ``layer``'s low-rank residual."""
        return self.shared(x) + (x @ self.down[layer].T) @ self.up[layer].T

    def forward(self, x: Tensor) -> Tensor:
        for layer in range(self.down.shape[0]):
            x = self.beta * self.step(x, layer) + (1 - self.beta) * x
        return x


@register
class ResidualAdapterBranch(LossTerm):
    """Cross-entropy of the head on features passed through shared residual adapters (training only).

    CE(head(adapters(f)), y) on labelled and confident points. Rank 4 and beta = 0.9 (MMRL++'s RES_LORA_DIM
    and composition weight), 2 adapter steps.
    """

    name = "residual_adapters"

    def __init__(self, weight: float = 0.3 / 0.7, schedule=None, layers: int = 2, rank: int = 4, beta: float = 0.9,
                 threshold: float = 0.7, feat_dim: int = 256) -> None:
        super().__init__(weight, schedule)
        self.threshold = threshold
        self.adapters = SharedResidualAdapters(feat_dim, layers, rank, beta)

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        feats, labels = labelled_and_confident(ctx, self.threshold)
        if feats is None or ctx.head is None:
            return zero_loss(ctx), {}
        return F.cross_entropy(ctx.head(self.adapters(feats)), labels), {}
