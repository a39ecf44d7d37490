"""Pieces several modules share: pseudo labels, class-balanced anchors, supervised contrast, lazy state.

Random draws use torch's default CPU generator (then move to the device), which the trainer seeds and
checkpoints, so a resumed run draws the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geot.addons.base import StepContext


def pseudo_labels(ctx: StepContext, threshold: float = 0.0) -> tuple[Tensor, Tensor]:
    """Teacher argmax of every unlabelled point, and whether its confidence reaches ``threshold``."""
    conf, labels = ctx.probs_teacher.max(dim=1)
    return labels, conf >= threshold


def labelled_and_confident(ctx: StepContext, threshold: float, feats: Tensor | None = None,
                           feats_lab: Tensor | None = None) -> tuple[Tensor | None, Tensor | None]:
    """Features with a (pseudo) label: labelled points with their labels, then confident unlabelled points.

    ``feats``/``feats_lab`` default to the student's features of the step. (None, None) when there is none.
    """
    feats = ctx.feats if feats is None else feats
    feats_lab = ctx.feats_lab if feats_lab is None else feats_lab
    parts, labels = [], []
    if feats_lab is not None and ctx.labels is not None and len(ctx.labels):
        parts.append(feats_lab)
        labels.append(ctx.labels)
    if feats is not None and ctx.probs_teacher is not None:
        pseudo, mask = pseudo_labels(ctx, threshold)
        parts.append(feats[mask])
        labels.append(pseudo[mask])
    if not parts or sum(len(p) for p in parts) == 0:
        return None, None
    return torch.cat(parts), torch.cat(labels)


def random_perm(n: int, device: torch.device | str = "cpu") -> Tensor:
    return torch.randperm(n).to(device)


def randn(*shape: int, like: Tensor) -> Tensor:
    """Standard normal draws from the CPU generator, as ``like``'s dtype and device."""
    return torch.randn(*shape).to(like)


def sample_balanced(labels: Tensor, total: int) -> Tensor:
    """Indices of at most ``total`` points, as many per present class as possible (``total // classes``).

    Classes with fewer points give all they have; the points of a class are drawn at random.
    """
    classes = labels.unique()
    if len(classes) == 0:
        return torch.zeros(0, dtype=torch.long, device=labels.device)
    per_class = max(1, total // len(classes))
    order = random_perm(len(labels), labels.device)
    shuffled = labels[order]
    keep = []
    for c in classes:
        members = order[shuffled == c]
        keep.append(members[:per_class])
    return torch.cat(keep)


def supcon_terms(queries: Tensor, keys: Tensor, q_labels: Tensor, k_labels: Tensor, temperature: float,
                 same_set: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """log p_ij = s_ij/tau - logsumexp_a s_ia/tau over the keys, and the positive mask.

    With ``same_set`` (keys are the queries themselves) the diagonal leaves both the denominator and the
    positives. Returns (log_prob, positives, allowed), each (Q, K).
    """
    logits = queries @ keys.T / temperature
    allowed = torch.ones_like(logits, dtype=torch.bool)
    if same_set:
        allowed.fill_diagonal_(False)
    logits = logits.masked_fill(~allowed, -1e4)  # finite: a row with nothing allowed stays NaN-free
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    log_prob = log_prob.masked_fill(~allowed, 0.0)
    positives = (q_labels[:, None] == k_labels[None, :]) & allowed
    return log_prob, positives, allowed


def supcon(queries: Tensor, keys: Tensor, q_labels: Tensor, k_labels: Tensor, temperature: float,
           same_set: bool = False, focal: bool = False) -> Tensor:
    """Supervised contrastive loss per query, -(1/|P(i)|) sum_{p in P(i)} w_ip log p_ip (0 without positives).

    ``focal`` weights each positive by (1 - p_ip) (Core-tuning's focal SupCon); otherwise w = 1.
    """
    log_prob, positives, _ = supcon_terms(queries, keys, q_labels, k_labels, temperature, same_set)
    weight = (1 - log_prob.exp()) if focal else torch.ones_like(log_prob)
    per_query = -(weight * log_prob * positives).sum(1) / positives.sum(1).clamp(min=1)
    return per_query * (positives.sum(1) > 0)


def zero_loss(ctx: StepContext) -> Tensor:
    """A zero that still belongs to the step's graph (nothing to learn from this batch)."""
    for t in (ctx.logits, ctx.feats, ctx.logits_lab):
        if t is not None:
            return t.sum() * 0
    return torch.zeros(())


class ResizableState(nn.Module):
    """Mixin: buffers that start empty and take their size from data take it from a checkpoint on load."""

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name, buf in list(self._buffers.items()):
            key = prefix + name
            if buf is not None and key in state_dict and state_dict[key].shape != buf.shape:
                self._buffers[name] = torch.empty_like(state_dict[key], device=buf.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class ClassMeans(ResizableState):
    """Running (EMA) class means of features, sized on first use; ``seen`` marks classes with a mean."""

    def __init__(self, num_classes: int, momentum: float = 0.9) -> None:
        super().__init__()
        self.num_classes, self.momentum = num_classes, momentum
        self.register_buffer("means", torch.zeros(num_classes, 0))
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))

    @torch.no_grad()
    def update(self, feats: Tensor, labels: Tensor) -> None:
        if feats is None or len(feats) == 0:
            return
        feats = feats.detach().float()
        if self.means.shape[1] != feats.shape[1]:
            self.means = torch.zeros(self.num_classes, feats.shape[1], device=feats.device)
            self.seen = torch.zeros(self.num_classes, dtype=torch.bool, device=feats.device)
        sums = torch.zeros_like(self.means).index_add_(0, labels, feats)
        counts = torch.bincount(labels, minlength=self.num_classes).to(feats)
        present = counts > 0
        batch = sums[present] / counts[present, None]
        old = self.means[present]
        blend = torch.where(self.seen[present, None], self.momentum * old + (1 - self.momentum) * batch, batch)
        self.means[present] = blend
        self.seen |= present


def class_groups(kind: str = "type") -> list[list[int]]:
    """Partitions of the 17 classes: ``type`` = gingiva / incisors+canines / premolars / molars,
    ``side`` = gingiva / first quadrant / second quadrant, ``none`` = one group."""
    if kind == "none":
        return [list(range(17))]
    if kind == "side":
        return [[0], list(range(1, 9)), list(range(9, 17))]
    if kind != "type":
        raise ValueError(f"unknown class grouping {kind!r}: type, side or none")
    both = lambda teeth: [t for t in teeth] + [8 + t for t in teeth]  # noqa: E731
    return [[0], both([1, 2, 3]), both([4, 5]), both([6, 7, 8])]


def kl(p: Tensor, q: Tensor, eps: float = 1e-12) -> Tensor:
    """KL(p || q) of two distributions (last dimension)."""
    return (p * (torch.log(p.clamp(min=eps)) - torch.log(q.clamp(min=eps)))).sum(-1)


def normalise(x: Tensor) -> Tensor:
    return F.normalize(x, dim=-1)
