"""Lbl2TransformerVec as a second labeller (Schopf et al., "Evaluating unsupervised text classification:
zero-shot and similarity-based approaches", NLPIR 2022).

A head-free labeller (class prototypes refined on each scan's most similar points) labels every point;
pseudo labels it contradicts get weight 0, so two independent views must agree before a label is trusted.
"""

from __future__ import annotations

import torch
from torch import Tensor

from geot.labels import NUM_CLASSES
from geot.modules import StepContext, TargetTransform, register
from geot.modules.common import normalise, pseudo_labels
from geot.modules.metric import tooth_metric
from geot.modules.state import ClassMeans


def refine_prototypes(emb: Tensor, seeds: Tensor, top_m: int) -> Tensor:
    """Each seed (unit vector) becomes the normalised centroid of itself and its ``top_m`` most similar
    rows of ``emb``."""
    m = min(top_m, len(emb))
    top = (emb @ seeds.T).topk(m, dim=0).indices  # (m, S)
    return normalise(emb[top].sum(0) + seeds)


def prototype_labels(emb: Tensor, prototypes: Tensor) -> Tensor:
    """Index of the most similar prototype per row."""
    return (emb @ prototypes.T).argmax(dim=1)


@register
class PrototypeSimilarityLabeler(TargetTransform):
    """Pseudo labels a second, prototype-based labeller contradicts get weight 0.

    Seeds: normalised running class means of the labelled points' features. Per scan, each seed is refined
    into the centroid of its ``top_m`` = 50 most similar points of that scan (teacher features of the weak
    view), and points take the label of the nearest refined prototype. A pseudo label stays when the two
    labels lie at most ``max_distance`` = 1 apart under the tooth metric (an arch or mirror neighbour), or
    when its class has no seed yet. Targets are returned unchanged; top_m is not verified.
    """

    name = "lbl2vec"

    def __init__(self, weight: float = 1.0, schedule=None, top_m: int = 50, max_distance: float = 1.0,
                 momentum: float = 0.9, num_classes: int = NUM_CLASSES) -> None:
        super().__init__(weight, schedule)
        self.top_m, self.max_distance = top_m, max_distance
        self.seeds = ClassMeans(num_classes, momentum)
        self.register_buffer("metric", torch.as_tensor(tooth_metric(), dtype=torch.float32))

    def agreement(self, emb: Tensor, teacher: Tensor, batch: Tensor) -> Tensor:
        classes = self.seeds.seen.nonzero().squeeze(1)
        seeds = normalise(self.seeds.means[classes]).to(emb)
        proto = torch.empty_like(teacher)
        for b in batch.unique():
            members = batch == b
            refined = refine_prototypes(emb[members], seeds, self.top_m)
            proto[members] = classes[prototype_labels(emb[members], refined)]
        metric = self.metric.to(emb.device)
        return (metric[teacher, proto] <= self.max_distance) | ~self.seeds.seen[teacher]

    def forward(self, ctx: StepContext, targets: Tensor) -> Tensor:
        if ctx.lab is not None:
            self.seeds.update(ctx.lab.feats, ctx.lab.labels)
        unl = ctx.unl
        feats = unl.feats_teacher if unl.feats_teacher is not None else unl.feats
        if not self.seeds.seen.any() or self.seeds.means.shape[1] != feats.shape[1]:
            return targets
        teacher, _ = pseudo_labels(unl)
        ctx.weigh(self.agreement(normalise(feats.detach()), teacher, unl.batch).float())
        return targets
