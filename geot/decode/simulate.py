"""Stand-ins for network outputs, made from true labels: to test and measure the decoder without a network.

Posteriors carry the errors a per-point classifier makes on real jaws: blurry, spatially coherent noise,
and patches of a tooth that take its neighbour's code. Offsets are the true vectors to each tooth's
centroid plus Gaussian noise.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import diags

from geot.decode.arch import CLASS_AT_POSITION, tooth_centroids
from geot.decode.graph import adjacency
from geot.labels import ARCH_POSITION, NUM_CLASSES


def simulate_offsets(points: np.ndarray, classes: np.ndarray, noise: float,
                     rng: np.random.Generator) -> np.ndarray:
    """(V, 3) vectors from each tooth vertex to its tooth's centroid plus N(0, noise^2) per axis; 0 on gingiva."""
    centroids = np.nan_to_num(tooth_centroids(points, classes))
    tooth = classes > 0
    offsets = np.where(tooth[:, None], centroids[classes] - points, 0.0)
    offsets[tooth] += rng.normal(0.0, noise, (int(tooth.sum()), 3))
    return offsets


def simulate_posteriors(points: np.ndarray, classes: np.ndarray, edges: np.ndarray, rng: np.random.Generator,
                        strength: float = 10.0, noise: float = 3.0, smooth_steps: int = 4, blur_steps: int = 3,
                        patch_rate: float = 0.3, patch_share: float = 0.35) -> np.ndarray:
    """(V, 17) posteriors: softmax of ``strength`` x one-hot(true) + spatially smoothed noise + patches.

    The noise (std ``noise`` after smoothing) is averaged over ``smooth_steps`` graph neighbourhoods, so
    errors come in blobs as a network's do; the one-hot term is averaged over ``blur_steps``, so that
    the network is unsure near borders. Each tooth, with probability ``patch_rate``, has the part of
    it nearest to a random one of its vertices (``patch_share`` of its vertices) favour the code of its
    neighbour along the arch.
    """
    n = len(classes)
    onehot = np.eye(NUM_CLASSES)[classes]
    field = rng.normal(0.0, 1.0, (n, NUM_CLASSES))
    if len(edges):
        adj = adjacency(edges, n) + diags(np.ones(n))
        walk = diags(1.0 / np.asarray(adj.sum(axis=1)).ravel()) @ adj
        for _ in range(smooth_steps):
            field = walk @ field
        for _ in range(blur_steps):
            onehot = walk @ onehot
    logits = strength * onehot
    logits += noise * field / max(float(field.std()), 1e-12)
    for cls in np.unique(classes[classes > 0]):
        if rng.random() >= patch_rate:
            continue
        members = np.flatnonzero(classes == cls)
        step = int(rng.choice([-1, 1]))
        pos = ARCH_POSITION[cls] + (step if 1 <= ARCH_POSITION[cls] + step <= 16 else -step)
        other = int(CLASS_AT_POSITION[pos])
        seed = points[rng.choice(members)]
        near = members[np.argsort(np.linalg.norm(points[members] - seed, axis=1))]
        patch = near[: int(patch_share * len(members))]
        logits[patch, other] += strength + rng.uniform(0.5, 1.5)
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    return probs / probs.sum(axis=1, keepdims=True)
