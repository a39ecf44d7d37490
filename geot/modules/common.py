"""Pieces several modules share: pseudo labels, class-balanced anchors, supervised contrast, class groups.

Random draws use torch's default CPU generator (then move to the device), which the trainer seeds and
checkpoints, so a resumed run draws the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from geot.labels import NUM_CLASSES
from geot.modules.context import StepContext, UnlabelledPart

TEETH_PER_QUADRANT = (NUM_CLASSES - 1) // 2


def pseudo_labels(unl: UnlabelledPart, threshold: float = 0.0) -> tuple[Tensor, Tensor]:
    """Teacher argmax of every unlabelled point, and whether its confidence reaches ``threshold``."""
    conf, labels = unl.probs_teacher.max(dim=1)
    return labels, conf >= threshold


def labelled_and_confident(ctx: StepContext, threshold: float) -> tuple[Tensor | None, Tensor | None]:
    """Student features with a (pseudo) label: labelled points with their labels, then confident unlabelled
    points with the teacher's. (None, None) when there is none."""
    parts, labels = [], []
    if ctx.lab is not None and len(ctx.lab.labels):
        parts.append(ctx.lab.feats)
        labels.append(ctx.lab.labels)
    if ctx.unl is not None:
        pseudo, mask = pseudo_labels(ctx.unl, threshold)
        parts.append(ctx.unl.feats[mask])
        labels.append(pseudo[mask])
    if not parts or sum(len(p) for p in parts) == 0:
        return None, None
    return torch.cat(parts), torch.cat(labels)


def confident_anchors(unl: UnlabelledPart, threshold: float, count: int) -> tuple[Tensor, Tensor]:
    """Class-balanced indices of confident unlabelled points, and their pseudo labels."""
    labels, mask = pseudo_labels(unl, threshold)
    candidates = mask.nonzero().squeeze(1)
    chosen = candidates[sample_balanced(labels[candidates], count)]
    return chosen, labels[chosen]


def teacher_keys(unl: UnlabelledPart, index: Tensor) -> tuple[Tensor, bool]:
    """Normalised key embeddings of the chosen points: the teacher's, else the student's own (detached);
    the flag says the keys are the student's (the queries' own set)."""
    source = unl.feats_teacher if unl.feats_teacher is not None else unl.feats.detach()
    return normalise(source[index].detach()), unl.feats_teacher is None


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
    if ctx.unl is not None:
        return ctx.unl.logits.sum() * 0
    if ctx.lab is not None:
        return ctx.lab.logits.sum() * 0
    return torch.zeros(())


def class_groups(kind: str = "type") -> list[list[int]]:
    """Partitions of the classes: ``type`` = gingiva / incisors+canines / premolars / molars,
    ``side`` = gingiva / first quadrant / second quadrant, ``none`` = one group."""
    if kind == "none":
        return [list(range(NUM_CLASSES))]
    if kind == "side":
        return [[0], list(range(1, TEETH_PER_QUADRANT + 1)), list(range(TEETH_PER_QUADRANT + 1, NUM_CLASSES))]
    if kind != "type":
        raise ValueError(f"unknown class grouping {kind!r}: type, side or none")
    both = lambda teeth: [t for t in teeth] + [TEETH_PER_QUADRANT + t for t in teeth]  # noqa: E731
    return [[0], both([1, 2, 3]), both([4, 5]), both([6, 7, 8])]


def kl(p: Tensor, q: Tensor, eps: float = 1e-12) -> Tensor:
    """KL(p || q) of two distributions (last dimension)."""
    return (p * (torch.log(p.clamp(min=eps)) - torch.log(q.clamp(min=eps)))).sum(-1)


def normalise(x: Tensor) -> Tensor:
    return F.normalize(x, dim=-1)
