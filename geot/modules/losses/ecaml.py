"""An adjacent-class confusion term, after ECAML (Chen & Deng, "Energy confused adversarial metric learning
for zero-shot image retrieval and clustering", AAAI 2019).

A small pull between the feature centroids of *adjacent* classes (tooth-metric distance 1): a metric-space
label smoothing against over-confident separation of teeth that only their position tells apart.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from geot.modules import LossTerm, StepContext, register
from geot.modules.common import labelled_and_confident, normalise, zero_loss
from geot.modules.metric import tooth_metric


def adjacent_pairs(max_distance: float = 1.0) -> Tensor:
    """(E, 2) class pairs a < b at tooth-metric distance <= ``max_distance`` (arch and mirror neighbours)."""
    d = torch.as_tensor(tooth_metric(), dtype=torch.float32)
    a, b = torch.nonzero((d <= max_distance) & (d > 0), as_tuple=True)
    keep = a < b
    return torch.stack([a[keep], b[keep]], 1)


def centroid_confusion(feats: Tensor, labels: Tensor, pairs: Tensor) -> Tensor:
    """Mean over the pairs whose two classes are both present of 1 - cos(centroid_a, centroid_b)."""
    emb = normalise(feats)
    num = int(pairs.max()) + 1 if len(pairs) else 1
    num = max(num, int(labels.max()) + 1)
    sums = torch.zeros(num, emb.shape[1], dtype=emb.dtype, device=emb.device).index_add(0, labels, emb)
    counts = torch.bincount(labels, minlength=num)
    present = (counts[pairs[:, 0]] > 0) & (counts[pairs[:, 1]] > 0)
    if not present.any():
        return feats.sum() * 0
    centroids = sums / counts.clamp(min=1)[:, None].to(emb)
    a, b = pairs[present, 0], pairs[present, 1]
    return (1 - F.cosine_similarity(centroids[a], centroids[b], dim=-1)).mean()


@register
class EnergyConfusionReg(LossTerm):
    """A small pull between the feature centroids of adjacent classes (tooth-metric distance 1).

    Weight 0.01 (small, as ECAML's adversarial confusion term); the energy here is 1 - cos of class
    centroids over adjacent pairs, since ECAML's exact energy and weight were not verified. Use a
    ``schedule`` to switch it off late in training.
    """

    name = "energy_confusion"

    def __init__(self, weight: float = 0.01, schedule=None, threshold: float = 0.7, max_distance: float = 1.0) -> None:
        super().__init__(weight, schedule)
        self.threshold = threshold
        self.register_buffer("pairs", adjacent_pairs(max_distance))

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        feats, labels = labelled_and_confident(ctx, self.threshold)
        if feats is None:
            return zero_loss(ctx), {}
        return centroid_confusion(feats, labels, self.pairs.to(labels.device)), {}
