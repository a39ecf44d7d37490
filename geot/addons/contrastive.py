"""Contrastive terms on point embeddings (h = normalised penultimate features).

* ``async_supcon`` (CoACT, Roy et al. 2024): SupCon of the student's strong-view embeddings (queries)
  against the teacher's weak-view embeddings of the same points (keys); positives share a pseudo label.
* ``focal_infonce`` (KaLM-Embedding-V2): InfoNCE student -> teacher embedding of the same point, each
  anchor weighted by (1 - s_i)^gamma, with extra negatives mixed from the hardest in-batch negatives.
* ``sbcl`` (SBCL, Hou et al. 2023): SupCon over subclasses (k-means within each class, so gingiva splits
  into parts of about a tooth's size) plus gamma times a class term between subclasses of one class.
* ``core_tuning`` (Core-tuning, Zhang et al. 2021): focal SupCon plus cross-entropy of the head on mixes of
  each anchor's hardest positive and hardest negative.
* ``region_mask_ssl`` (correlated feature masking, after Yao et al. 2021): complementary spatial halves of
  a scan, pooled, must find each other among the halves of the other scans (InfoNCE).

Anchors are confident points (teacher confidence >= ``threshold``), drawn class-balanced (except SBCL,
whose subclasses do the balancing); labels are the teacher's pseudo labels, plus true labels where a term
also uses the labelled points.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from geot.addons.base import LossTerm, StepContext, register
from geot.addons.common import (
    labelled_and_confident,
    normalise,
    pseudo_labels,
    random_perm,
    sample_balanced,
    supcon,
    zero_loss,
)


def confident_anchors(ctx: StepContext, threshold: float, count: int) -> tuple[Tensor, Tensor]:
    """Class-balanced indices of confident unlabelled points, and their pseudo labels."""
    labels, mask = pseudo_labels(ctx, threshold)
    candidates = mask.nonzero().squeeze(1)
    chosen = candidates[sample_balanced(labels[candidates], count)]
    return chosen, labels[chosen]


def teacher_keys(ctx: StepContext, index: Tensor) -> tuple[Tensor, bool]:
    """Normalised key embeddings of the chosen points: the teacher's, else the student's own (detached)."""
    source = ctx.feats_teacher if ctx.feats_teacher is not None else ctx.feats.detach()
    return normalise(source[index].detach()), ctx.feats_teacher is None


@register
class AsyncContrastConsistency(LossTerm):
    """Loss ``async_supcon``: tau = 0.07, weight 1 (CoACT's ``moco_loss_factor``); confidence 0.7 is ours.

    L = -(1/|A|) sum_i (1/|P(i)|) sum_{p in P(i)} log softmax_p(h_i . k / tau); a query's own teacher key is
    one of its positives (two views of one point). CoACT's prototype initialisation of the head is
    ``geot.addons.prototypes.prototype_head_init``.
    """

    name = "async_supcon"

    def __init__(self, weight: float = 1.0, schedule=None, temperature: float = 0.07, threshold: float = 0.7,
                 anchors: int = 512) -> None:
        super().__init__(weight, schedule)
        self.temperature, self.threshold, self.anchors = temperature, threshold, anchors

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        if ctx.feats is None:
            return zero_loss(ctx), {}
        index, labels = confident_anchors(ctx, self.threshold, self.anchors)
        if len(index) < 2:
            return zero_loss(ctx), {}
        keys, same = teacher_keys(ctx, index)
        loss = supcon(normalise(ctx.feats[index]), keys, labels, labels, self.temperature, same_set=same)
        return loss.mean(), {"anchors": float(len(index))}


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
    """Loss ``focal_infonce``: tau = 0.1, gamma = 1, 4 negatives mixed from the 8 hardest (KaLM mines 7 hard
    negatives per query; gamma, the mixing weight and the count are not verified)."""

    name = "focal_infonce"

    def __init__(self, weight: float = 1.0, schedule=None, temperature: float = 0.1, gamma: float = 1.0,
                 threshold: float = 0.7, anchors: int = 512, hardest: int = 8, mixed: int = 4) -> None:
        super().__init__(weight, schedule)
        self.temperature, self.gamma, self.threshold, self.anchors = temperature, gamma, threshold, anchors
        self.hardest, self.mixed = hardest, mixed

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        if ctx.feats is None:
            return zero_loss(ctx), {}
        index, labels = confident_anchors(ctx, self.threshold, self.anchors)
        if len(index) < 2:
            return zero_loss(ctx), {}
        keys, _ = teacher_keys(ctx, index)
        loss, s = focal_infonce(normalise(ctx.feats[index]), keys, labels, self.temperature, self.gamma,
                                self.hardest, self.mixed)
        return loss.mean(), {"positive_prob": s.mean().item()}


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
    """Loss ``sbcl``: tau = 0.1, gamma = 0.25 (SBCL's code); subclass size = the smallest class count of
    the anchors, at least ``min_subclass`` = 10 (the code's lower bound L).

    Simplified: subclasses come from k-means on the step's anchors (not an epoch-level feature bank), and
    anchors are drawn uniformly from labelled and confident points, so gingiva is the class that splits.
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
    """Loss ``core_tuning``: CE(head(mixed hard pairs)) + eta * focal SupCon, eta = 10 and tau = 0.07
    (Core-tuning's defaults); the module weight 0.1 scales both, so SupCon enters at weight 1 next to the
    main loss. Core-tuning's smooth-classifier mixup with a random partner is left out."""

    name = "core_tuning"

    def __init__(self, weight: float = 0.1, schedule=None, temperature: float = 0.07, eta: float = 10.0,
                 threshold: float = 0.7, anchors: int = 512, num_classes: int = 17) -> None:
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
    """Loss ``region_mask_ssl``: view 1 = the half of a scan nearest a random seed, view 2 = the other half;
    their pooled embeddings are matched across the step's scans (needs >= 2 unlabelled scans per step).

    Simplified: the masks act on the pooling of the student's features, not on the network input, so no
    extra forward pass is made (the backbone still saw the whole scan). tau = 0.1 is not verified.
    """

    name = "region_mask_ssl"

    def __init__(self, weight: float = 1.0, schedule=None, temperature: float = 0.1, fraction: float = 0.5) -> None:
        super().__init__(weight, schedule)
        self.temperature, self.fraction = temperature, fraction

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        if ctx.feats is None or ctx.batch is None:
            return zero_loss(ctx), {}
        scans = ctx.batch.unique()
        if len(scans) < 2:
            return zero_loss(ctx), {}
        mask = region_masks(ctx.pos, ctx.batch, self.fraction)
        emb = normalise(ctx.feats)
        loss = two_view_infonce(pooled(emb, ctx.batch, mask, scans), pooled(emb, ctx.batch, ~mask, scans),
                                self.temperature)
        return loss, {}

