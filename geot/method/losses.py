"""Point-wise classification losses, including the forward-corrected loss of a noise-transition model."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``values`` over points where ``mask`` holds (0 when none does)."""
    if mask is None:
        return values.mean()
    return (values * mask).sum() / mask.sum().clamp(min=1)


def poly1_focal(logits: Tensor, target: Tensor, alpha: float = 0.25, gamma: float = 2.0,
                epsilon: float = 1.0) -> Tensor:
    """Sigmoid (one-vs-all) Poly-1 focal loss per point, as the reference GeoT code trains with."""
    onehot = F.one_hot(target, logits.shape[1]).to(logits.dtype)
    s = torch.sigmoid(logits)
    pt = onehot * s + (1 - onehot) * (1 - s)
    at = alpha * onehot + (1 - alpha) * (1 - onehot)
    bce = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none")
    return (at * bce * (1 - pt) ** gamma + epsilon * (1 - pt) ** (gamma + 1)).mean(dim=1)


def corrected_nll(probs: Tensor, transition: Tensor, target: Tensor, eps: float = 1e-6) -> Tensor:
    """Per-point ``-log (T^T p)[y]``: the clean posterior ``p`` pushed through the noise model ``T``.

    ``T[a, b]`` is the probability that clean class ``a`` is observed as ``b``, so the noisy
    posterior is ``sum_a p[a] T[a, b]``; with ``T = I`` this is the plain cross-entropy. ``target`` is a
    class index per point, or soft targets ``(P, C)`` (then ``-sum_b t_b log (T^T p)_b``).
    """
    noisy = torch.einsum("pa,pab->pb", probs, transition).clamp(min=eps)
    if target.dtype == torch.long:
        return -torch.log(noisy.gather(1, target[:, None]).squeeze(1))
    return -(target * torch.log(noisy)).sum(dim=1)


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-point ``-sum_c t_c log softmax(z)_c`` (equals cross-entropy for one-hot targets)."""
    return -(targets * torch.log_softmax(logits, dim=1)).sum(dim=1)


def soft_dice(logits: Tensor, labels: Tensor, batch: Tensor, eps: float = 1.0) -> Tensor:
    """Mean over the (scan, class) pairs present in the labels of ``1 - 2|p y| / (|p| + |y|)``.

    Beside cross-entropy it weighs each tooth by its overlap, not by its points, so small and rare teeth
    (incisors, third molars) count as much as molars and gingiva (Milletari et al., 3DV 2016).
    """
    c = logits.shape[1]
    probs = torch.softmax(logits, dim=1)
    scans = int(batch.max()) + 1 if len(batch) else 0
    onehot = F.one_hot(labels, c).to(probs.dtype)
    inter = torch.zeros(scans, c, dtype=probs.dtype, device=probs.device).index_add_(0, batch, probs * onehot)
    p_sum = torch.zeros_like(inter).index_add_(0, batch, probs)
    y_sum = torch.zeros_like(inter).index_add_(0, batch, onehot)
    present = y_sum > 0
    dice = (2 * inter + eps) / (p_sum + y_sum + eps)
    return (1 - dice[present]).mean() if present.any() else logits.sum() * 0


def centroid_offsets(pos: Tensor, labels: Tensor, batch: Tensor) -> Tensor:
    """(P, 3) vector from each point to the centroid of its class in its scan (one tooth per class and jaw)."""
    c = int(labels.max()) + 1 if len(labels) else 1
    key = batch * c + labels
    sums = torch.zeros(int(key.max()) + 1 if len(key) else 0, 3, dtype=pos.dtype, device=pos.device)
    sums.index_add_(0, key, pos)
    counts = torch.bincount(key, minlength=len(sums)).clamp(min=1).to(pos.dtype)
    return sums[key] / counts[key, None] - pos


def offset_loss(offsets: Tensor, pos: Tensor, labels: Tensor, batch: Tensor, gingiva: int = 0) -> Tensor:
    """Mean L1 distance between predicted and true offsets to the tooth centroid, over tooth points."""
    teeth = labels != gingiva
    if not teeth.any():
        return offsets.sum() * 0
    target = centroid_offsets(pos, labels, batch)
    return (offsets[teeth] - target[teeth]).abs().sum(dim=1).mean()
