"""FDI numbering of tooth instances: codes in arch order, each used at most once, gaps allowed.

Instances are sorted along the arch (:func:`geot.decode.arch.arch_angle`) and given strictly increasing
arch positions by dynamic programming, so a code can never repeat, two neighbours can never swap, and a
missing tooth leaves a gap instead of shifting every code after it. Each choice is scored in log units:

* the instance's mean posterior of the code's tooth *type* (incisor 1 ... third molar 8, both sides
  summed). The side comes from geometry, not from the posteriors: codes 1-8 lie on -x in the canonical
  frame, so a mirrored jaw gets the other side's codes (``mirrored=True`` declares a mirrored source);
* a side term, ``log sigmoid(+-x / side_scale)`` of the centroid's x (the canonical frame is centred);
* with :class:`~geot.decode.priors.ArchPriors`: Gaussian log-densities of the centroid (position), of
  the RMS radius (size), and of the distance to the previous numbered instance (spacing, which is what
  tells a gap from a shift), plus ``log(p / (1 - p))`` of how often the code is present.

Each geometric term costs at most ``cap`` so that one odd instance cannot dominate. An instance may be
left without a code at a cost of ``skip`` x its size relative to the median instance (at most 1): worth
it for a fragment (a piece of a tooth that took its neighbour's code) or a surplus instance; it gets 0
and its vertices join the instances around it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geot.decode.arch import CLASS_AT_POSITION, arch_angle
from geot.decode.priors import ArchPriors

POSITIONS = 16
TYPE_OF_CLASS = np.r_[0, np.arange(1, 9), np.arange(1, 9)]  # tooth number 1..8 of each class


@dataclass(frozen=True)
class NumberingWeights:
    """Weights of the terms of the numbering score (log units) and its two scales.

    Chosen on the real jaws with priors from half of the patients and simulated posteriors on the other
    half, including a network that shifts every code after a removed tooth (0.6 against 0.4).
    """

    posterior: float = 2.0
    side: float = 1.0
    side_scale: float = 0.03     # canonical units (about a millimetre): |x| beyond a few of these is sure
    position: float = 0.0        # off: a whole arch shifts between scans more than neighbours differ
    size: float = 0.5
    spacing: float = 1.5
    presence: float = 0.5
    cap: float = 5.0             # the most one geometric term can cost, before its weight
    skip: float = 30.0           # cost of leaving a median-sized instance without a code


@dataclass(frozen=True)
class InstanceStats:
    """What numbering needs to know of each instance (arrays over instances 1..K, in id order)."""

    centroid: np.ndarray     # (K, 3)
    size: np.ndarray         # (K,) RMS distance of its vertices from the centroid
    type_mass: np.ndarray    # (K, 9) mean posterior of each tooth type (column 0: gingiva)
    count: np.ndarray | None = None  # (K,) vertices; None: all alike


def instance_stats(instances: np.ndarray, points: np.ndarray, probs: np.ndarray, votes: np.ndarray | None = None
                   ) -> InstanceStats:
    """Centroid, size and mean type posteriors of instances 1..K (``instances`` 0 is gingiva).

    With ``votes`` (V, 3), each point's estimate of its tooth's centroid, the centroid is their median per
    axis: gum wrongly taken into an instance then cannot drag it out of arch order.
    """
    k = int(instances.max()) if len(instances) else 0
    tooth = instances > 0
    idx = instances[tooth] - 1
    count = np.maximum(np.bincount(idx, minlength=k), 1).astype(np.float64)
    centroid = np.stack([np.bincount(idx, points[tooth, d], k) for d in range(3)], axis=1) / count[:, None]
    dev = ((points[tooth] - centroid[idx]) ** 2).sum(axis=1)
    size = np.sqrt(np.bincount(idx, dev, k) / count)
    if votes is not None:
        for i in range(k):
            members = votes[instances == i + 1]
            if len(members):
                centroid[i] = np.median(members, axis=0)
    mean = np.stack([np.bincount(idx, probs[tooth, c], k) for c in range(probs.shape[1])], axis=1) / count[:, None]
    type_mass = np.zeros((k, 9))
    np.add.at(type_mass.T, TYPE_OF_CLASS, mean.T)
    return InstanceStats(centroid, size, type_mass, count)


def _misfit(x: np.ndarray, mean: np.ndarray, std: np.ndarray, cap: float) -> np.ndarray:
    """``-min(sum(z^2) / 2, cap)`` over the last axis: a Gaussian log-likelihood (up to a constant) that
    stops growing at ``cap``, so that one unusual tooth (a closed gap, a tipped molar) costs a bounded
    amount and confident posteriors can still outvote it. NaN priors (a class never seen) cost nothing:
    no geometry is known for it, and its presence prior already says it is rare."""
    value = 0.5 * (((x - mean) / std) ** 2).sum(axis=-1)
    return -np.minimum(np.nan_to_num(value, nan=0.0), cap)


def code_scores(stats: InstanceStats, priors: ArchPriors | None, weights: NumberingWeights) -> np.ndarray:
    """(K, 16) score of giving instance k the code at arch position p + 1."""
    classes = CLASS_AT_POSITION[1:]
    type_mass = stats.type_mass[:, 1:] / np.maximum(stats.type_mass[:, 1:].sum(axis=1, keepdims=True), 1e-12)
    score = weights.posterior * np.log(type_mass[:, TYPE_OF_CLASS[classes] - 1] + 1e-3)
    side = np.where(classes <= 8, -1.0, 1.0)                     # classes 1-8 on -x
    score += weights.side * -np.logaddexp(0.0, -side[None, :] * stats.centroid[:, :1] / weights.side_scale)
    if priors is not None:
        mean, std = priors.centroid_mean[classes], priors.centroid_std[classes]
        score += weights.position * _misfit(stats.centroid[:, None, :], mean[None], std[None], weights.cap)
        size = _misfit(stats.size[:, None, None], priors.size_mean[classes][None, :, None],
                       priors.size_std[classes][None, :, None], weights.cap)
        score += weights.size * size
        p = np.clip(priors.presence[classes], 0.01, 0.99)
        score += weights.presence * np.log(p / (1 - p))[None, :]
    return score


def spacing_scores(stats: InstanceStats, priors: ArchPriors, weights: NumberingWeights, i: int, j: int
                   ) -> np.ndarray:
    """(16, 16) score of instance i at position a + 1 followed by instance j at position b + 1."""
    classes = CLASS_AT_POSITION[1:]
    dist = np.full((1, 1, 1), np.linalg.norm(stats.centroid[j] - stats.centroid[i]))
    mean = priors.spacing_mean[classes[:, None], classes[None, :]][..., None]
    std = priors.spacing_std[classes[:, None], classes[None, :]][..., None]
    return weights.spacing * _misfit(dist, mean, std, weights.cap)


def arch_order(centroids: np.ndarray) -> np.ndarray:
    """Indices of the instances sorted along the arch, from the -x end to the +x end."""
    return np.argsort(arch_angle(centroids), kind="stable")


def number_instances(stats: InstanceStats, priors: ArchPriors | None = None,
                     weights: NumberingWeights = NumberingWeights(), mirrored: bool = False) -> np.ndarray:
    """(K,) class index 1..16 for each instance (0: left without a code), codes unique and in arch order."""
    if mirrored:  # the source's handedness is flipped: number the mirror image
        stats = InstanceStats(stats.centroid * [-1.0, 1.0, 1.0], stats.size, stats.type_mass, stats.count)
    k = len(stats.centroid)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    order = arch_order(stats.centroid)
    unary = code_scores(stats, priors, weights)[order]                       # (K, 16) in arch order
    count = np.ones(k) if stats.count is None else stats.count[order].astype(np.float64)
    skip = weights.skip * np.minimum(1.0, count / np.median(count))          # a fragment is cheap to drop
    skipped = np.r_[0.0, np.cumsum(skip)]                                    # cost of dropping the first m
    upper = np.triu(np.ones((POSITIONS, POSITIONS), dtype=bool), 1)          # a < b
    best = np.full((k, POSITIONS), -np.inf)
    back: list[list[tuple[int, int]]] = [[(-1, -1)] * POSITIONS for _ in range(k)]
    for j in range(k):
        best[j] = unary[j] - skipped[j]                                      # first numbered instance
        for i in range(j):
            trans = best[i][:, None] - (skipped[j] - skipped[i + 1])
            if priors is not None:
                trans = trans + spacing_scores(stats, priors, weights, order[i], order[j])
            trans = np.where(upper, trans, -np.inf)
            prev = trans.argmax(axis=0)
            cand = trans[prev, np.arange(POSITIONS)] + unary[j]
            better = cand > best[j]
            best[j] = np.where(better, cand, best[j])
            for b in np.flatnonzero(better):
                back[j][b] = (i, int(prev[b]))
    total = best - (skipped[k] - skipped[1:])[:, None]
    codes = np.zeros(k, dtype=np.int64)
    if not np.isfinite(total).any() or total.max() < -skipped[k]:
        return codes
    j, b = np.unravel_index(int(np.argmax(total)), total.shape)
    while j >= 0:
        codes[order[j]] = CLASS_AT_POSITION[b + 1]
        j, b = back[j][b]
    return codes
