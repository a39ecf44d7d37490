"""Focal InfoNCE with mixed hard negatives, after KaLM-Embedding-V2 (Zhao et al., arXiv 2025).

InfoNCE from the student's embedding of a point to the teacher's embedding of the same point, each anchor
weighted by (1 - s_i)^gamma, with extra negatives mixed from the hardest in-batch negatives. Anchors are
confident points (teacher confidence >= ``threshold``), drawn class-balanced; labels are the teacher's
pseudo labels.
"""

from __future__ import annotations

import torch
from torch import Tensor

from geot.modules import LossTerm, StepContext, register
from geot.modules.common import confident_anchors, normalise, teacher_keys, zero_loss


def mix_hard_negatives(sims: Tensor, keys: Tensor, negative: Tensor, hardest: int, mixed: int) -> tuple[Tensor, Tensor]:
    """Per query, ``mixed`` synthetic negatives normalise(b n_a + (1 - b) n_b), b ~ U(0, 1), from pairs of
    its ``hardest`` most similar negatives (ranks 0+1, 2+3, ...). Returns (Q, mixed, D) and a validity mask."""
    k = min(hardest, sims.shape[1], 2 * mixed)
    top = sims.detach().masked_fill(~negative, float("-inf")).topk(k, dim=1)
    pairs = k // 2
    if pairs == 0:
        return keys.new_zeros(len(sims), 0, keys.shape[1]), negative.new_zeros(len(sims), 0)
    a, b = top.indices[:, 0:2 * pairs:2], top.indices[:, 1:2 * pairs:2]
    valid = torch.isfinite(top.values[:, 0:2 * pairs:2]) & torch.isfinite(top.values[:, 1:2 * pairs:2])
    beta = torch.rand(len(sims), pairs, 1).to(keys)
    return normalise(beta * keys[a] + (1 - beta) * keys[b]), valid


def focal_infonce(queries: Tensor, keys: Tensor, labels: Tensor, temperature: float = 0.1, gamma: float = 1.0,
                  hardest: int = 8, mixed: int = 4) -> tuple[Tensor, Tensor]:
    """Per anchor -(1 - s_i)^gamma log s_i, s_i the softmax probability of its positive key k_i among the
    keys of other-label anchors and the mixed hard negatives; the focal weight is detached. Returns (loss, s)."""
    sims = queries @ keys.T
    negative = labels[:, None] != labels[None, :]
    extra, valid = mix_hard_negatives(sims, keys, negative, hardest, mixed)
    extra_sims = torch.einsum("qd,qmd->qm", queries, extra).masked_fill(~valid, float("-inf"))
    negatives = sims.masked_fill(~negative, float("-inf"))
    logits = torch.cat([sims.diagonal()[:, None], negatives, extra_sims], dim=1) / temperature
    log_s = torch.log_softmax(logits, dim=1)[:, 0]
    s = log_s.exp()
    focal = (1 - s.detach()).clamp(min=0) ** gamma
    return -(focal * log_s), s


@register
class FocalInfoNCE(LossTerm):
    """Focal InfoNCE from student to teacher embeddings of confident points, with mixed hard negatives.

    tau = 0.1, gamma = 1, 4 negatives mixed from the 8 hardest (KaLM mines 7 hard negatives per query;
    gamma, the mixing weight and the count are not verified).
    """

    name = "focal_infonce"

    def __init__(self, weight: float = 1.0, schedule=None, temperature: float = 0.1, gamma: float = 1.0,
                 threshold: float = 0.7, anchors: int = 512, hardest: int = 8, mixed: int = 4) -> None:
        super().__init__(weight, schedule)
        self.temperature, self.gamma, self.threshold, self.anchors = temperature, gamma, threshold, anchors
        self.hardest, self.mixed = hardest, mixed

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        if ctx.unl is None:
            return zero_loss(ctx), {}
        index, labels = confident_anchors(ctx.unl, self.threshold, self.anchors)
        if len(index) < 2:
            return zero_loss(ctx), {}
        keys, _ = teacher_keys(ctx.unl, index)
        loss, s = focal_infonce(normalise(ctx.unl.feats[index]), keys, labels, self.temperature, self.gamma,
                                self.hardest, self.mixed)
        return loss.mean(), {"positive_prob": s.mean().item()}
