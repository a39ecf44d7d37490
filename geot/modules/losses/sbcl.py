"""SBCL: subclass-balancing contrastive learning (Hou et al., ICCV 2023).

SupCon over subclasses (k-means within each class, so gingiva splits into parts of about a tooth's size)
plus gamma times a class term between subclasses of one class, on labelled and confident points.
"""

from __future__ import annotations

import torch
from torch import Tensor

from geot.modules import LossTerm, StepContext, register
from geot.modules.common import labelled_and_confident, normalise, random_perm, supcon, zero_loss


def spherical_kmeans(x: Tensor, k: int, iters: int = 10) -> Tensor:
    """Cluster ids of unit vectors ``x`` into ``k`` clusters by cosine similarity (random distinct seeds)."""
    if k <= 1 or len(x) <= 1:
        return torch.zeros(len(x), dtype=torch.long, device=x.device)
    k = min(k, len(x))
    centres = x[random_perm(len(x), x.device)[:k]]
    assign = torch.zeros(len(x), dtype=torch.long, device=x.device)
    for _ in range(iters):
        assign = (x @ centres.T).argmax(dim=1)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        empty = torch.bincount(assign, minlength=k) == 0
        centres = torch.where(empty[:, None], centres, normalise(sums))
    return assign


def subclass_ids(emb: Tensor, labels: Tensor, size: int, iters: int = 10) -> Tensor:
    """Global subclass id per point: class c splits into max(1, n_c // size) k-means clusters; ids of
    different classes never coincide."""
    ids = torch.zeros_like(labels)
    offset = 0
    for c in labels.unique():
        members = (labels == c).nonzero().squeeze(1)
        k = max(1, len(members) // max(size, 1))
        ids[members] = spherical_kmeans(emb[members], k, iters) + offset
        offset += k
    return ids


def sbcl_loss(emb: Tensor, labels: Tensor, subclasses: Tensor, temperature: float = 0.1,
              gamma: float = 0.25) -> Tensor:
    """Subclass SupCon + gamma * class term; the class term's positives are same-class points of other
    subclasses and its denominator leaves out the anchor's own subclass."""
    sub = supcon(emb, emb, subclasses, subclasses, temperature, same_set=True)
    logits = emb @ emb.T / temperature
    own_sub = subclasses[:, None] == subclasses[None, :]
    logits = logits.masked_fill(own_sub, -1e4)
    log_prob = (logits - torch.logsumexp(logits, dim=1, keepdim=True)).masked_fill(own_sub, 0.0)
    positives = (labels[:, None] == labels[None, :]) & ~own_sub
    has = positives.sum(1) > 0
    cls = -(log_prob * positives).sum(1) / positives.sum(1).clamp(min=1)
    class_term = cls[has].mean() if has.any() else emb.sum() * 0
    return sub.mean() + gamma * class_term


@register
class SubclassBalancedContrast(LossTerm):
    """SupCon over k-means subclasses of each class plus a class term between subclasses.

    tau = 0.1, gamma = 0.25 (SBCL's code); subclass size = the smallest class count of the anchors, at
    least ``min_subclass`` = 10 (the code's lower bound L). Simplified: subclasses come from k-means on the
    step's anchors (not an epoch-level feature bank), and anchors are drawn uniformly from labelled and
    confident points, so gingiva is the class that splits.
    """

    name = "sbcl"

    def __init__(self, weight: float = 1.0, schedule=None, temperature: float = 0.1, gamma: float = 0.25,
                 threshold: float = 0.7, anchors: int = 1024, min_subclass: int = 10, iters: int = 10) -> None:
        super().__init__(weight, schedule)
        self.temperature, self.gamma, self.threshold, self.anchors = temperature, gamma, threshold, anchors
        self.min_subclass, self.iters = min_subclass, iters

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        feats, labels = labelled_and_confident(ctx, self.threshold)
        if feats is None or len(feats) < 2:
            return zero_loss(ctx), {}
        chosen = random_perm(len(feats), feats.device)[: self.anchors]
        emb, labels = normalise(feats[chosen]), labels[chosen]
        counts = torch.bincount(labels)
        size = max(int(counts[counts > 0].min()), self.min_subclass)
        subclasses = subclass_ids(emb.detach(), labels, size, self.iters)
        loss = sbcl_loss(emb, labels, subclasses, self.temperature, self.gamma)
        return loss, {"subclasses": float(subclasses.max() + 1)}
