"""Core-tuning: contrast-regularised fine-tuning (Zhang et al., "Unleashing the power of contrastive
self-supervised visual models via contrast-regularized fine-tuning", NeurIPS 2021).

Focal SupCon on labelled and confident points (class-balanced), plus cross-entropy of the head on mixes of
each anchor's hardest positive and hardest negative.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from geot.labels import NUM_CLASSES
from geot.modules import LossTerm, StepContext, register
from geot.modules.common import labelled_and_confident, normalise, sample_balanced, supcon, zero_loss


def hard_pair_mix(feats: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor, Tensor]:
    """Core-tuning's hard pairs: per anchor, its hardest positive p (least similar, same class) and hardest
    negative n (most similar, other class) mixed as lam f_p + (1 - lam) f_n, lam ~ Beta(1, 1), with the
    label mixed alike. Only anchors that have both. Returns (mixed features, soft labels, lam)."""
    emb = normalise(feats.detach())
    sims = emb @ emb.T
    same = labels[:, None] == labels[None, :]
    other = same.clone().fill_diagonal_(False)
    ok = other.any(1) & (~same).any(1)
    if not ok.any():
        return feats[:0], feats.new_zeros(0, num_classes), feats.new_zeros(0)
    hardest_pos = sims.masked_fill(~other, float("inf")).argmin(dim=1)[ok]
    hardest_neg = sims.masked_fill(same, float("-inf")).argmax(dim=1)[ok]
    lam = torch.rand(int(ok.sum())).to(feats)
    mixed = lam[:, None] * feats[hardest_pos] + (1 - lam[:, None]) * feats[hardest_neg]
    soft = lam[:, None] * F.one_hot(labels[hardest_pos], num_classes).to(feats) \
        + (1 - lam[:, None]) * F.one_hot(labels[hardest_neg], num_classes).to(feats)
    return mixed, soft, lam


@register
class FocalSupConHardMix(LossTerm):
    """Focal SupCon plus cross-entropy of the head on mixed hard positive/negative pairs.

    CE(head(mixed hard pairs)) + eta * focal SupCon, eta = 10 and tau = 0.07 (Core-tuning's defaults); the
    module weight 0.1 scales both, so SupCon enters at weight 1 next to the main loss. Core-tuning's
    smooth-classifier mixup with a random partner is left out.
    """

    name = "core_tuning"

    def __init__(self, weight: float = 0.1, schedule=None, temperature: float = 0.07, eta: float = 10.0,
                 threshold: float = 0.7, anchors: int = 512, num_classes: int = NUM_CLASSES) -> None:
        super().__init__(weight, schedule)
        self.temperature, self.eta, self.threshold, self.anchors = temperature, eta, threshold, anchors
        self.num_classes = num_classes

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        feats, labels = labelled_and_confident(ctx, self.threshold)
        if feats is None or len(feats) < 2:
            return zero_loss(ctx), {}
        chosen = sample_balanced(labels, self.anchors)
        feats, labels = feats[chosen], labels[chosen]
        emb = normalise(feats)
        focal = supcon(emb, emb, labels, labels, self.temperature, same_set=True, focal=True).mean()
        loss, logs = self.eta * focal, {"focal_supcon": focal.item()}
        if ctx.head is not None:
            mixed, soft, _ = hard_pair_mix(feats, labels, self.num_classes)
            if len(mixed):
                ce = -(soft * torch.log_softmax(ctx.head(mixed), dim=1)).sum(1).mean()
                loss, logs["mix_ce"] = loss + ce, ce.item()
        return loss, logs
