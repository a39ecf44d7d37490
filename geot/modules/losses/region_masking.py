"""Correlated region masking, after correlated feature masking (Yao et al., "Self-supervised learning for
large-scale item recommendations", CIKM 2021).

Complementary spatial halves of a scan, pooled, must find each other among the halves of the other scans
of the step (InfoNCE).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from geot.modules import LossTerm, StepContext, register
from geot.modules.common import normalise, zero_loss


def region_masks(pos: Tensor, batch: Tensor, fraction: float = 0.5) -> Tensor:
    """True for the ``fraction`` of each scan's points nearest a random seed point of that scan."""
    mask = torch.zeros(len(pos), dtype=torch.bool, device=pos.device)
    for b in batch.unique():
        members = (batch == b).nonzero().squeeze(1)
        seed = members[int(torch.randint(len(members), ()))]
        dist = (pos[members] - pos[seed]).norm(dim=1)
        take = max(1, min(len(members) - 1, round(fraction * len(members))))
        mask[members[dist.argsort()[:take]]] = True
    return mask


def pooled(emb: Tensor, batch: Tensor, mask: Tensor, scans: Tensor) -> Tensor:
    """Normalised mean embedding of the masked points of each scan in ``scans``."""
    return torch.stack([normalise(emb[(batch == b) & mask].mean(0)) for b in scans])


def two_view_infonce(a: Tensor, b: Tensor, temperature: float) -> Tensor:
    """Symmetric InfoNCE: row i of ``a`` must pick row i of ``b`` among all rows of ``b`` (and back)."""
    logits = a @ b.T / temperature
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


@register
class CorrelatedRegionMaskingSSL(LossTerm):
    """InfoNCE between the pooled embeddings of complementary halves of each unlabelled scan.

    View 1 = the half of a scan nearest a random seed, view 2 = the other half; their pooled embeddings are
    matched across the step's scans (needs >= 2 unlabelled scans per step). Simplified: the masks act on the
    pooling of the student's features, not on the network input, so no extra forward pass is made (the
    backbone still saw the whole scan). tau = 0.1 is not verified.
    """

    name = "region_mask_ssl"

    def __init__(self, weight: float = 1.0, schedule=None, temperature: float = 0.1, fraction: float = 0.5) -> None:
        super().__init__(weight, schedule)
        self.temperature, self.fraction = temperature, fraction

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        if ctx.unl is None:
            return zero_loss(ctx), {}
        batch = ctx.unl.batch
        scans = batch.unique()
        if len(scans) < 2:
            return zero_loss(ctx), {}
        mask = region_masks(ctx.unl.pos, batch, self.fraction)
        emb = normalise(ctx.unl.feats)
        loss = two_view_infonce(pooled(emb, batch, mask, scans), pooled(emb, batch, ~mask, scans), self.temperature)
        return loss, {}
