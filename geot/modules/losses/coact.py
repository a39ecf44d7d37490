"""CoACT (Roy et al., "Few-shot tuning of foundation models for class-incremental learning", arXiv 2024).

* ``async_supcon``: SupCon of the student's strong-view embeddings (queries) against the teacher's
  weak-view embeddings of the same points (keys); positives share a pseudo label.
* ``logit_anchor``: CoACT's consistency term, the squared distance of the student's logits to the frozen
  student's on unlabelled points.
* ``prototype_head_init``: CoACT's head initialisation from class means (a one-off function).

Anchors of the contrast are confident points (teacher confidence >= ``threshold``), drawn class-balanced.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from geot.modules import LossTerm, StepContext, register
from geot.modules.common import confident_anchors, normalise, supcon, teacher_keys, zero_loss


@register
class AsyncContrastConsistency(LossTerm):
    """SupCon of the student's embeddings against the teacher's embeddings of confident points.

    tau = 0.07, weight 1 (CoACT's ``moco_loss_factor``); confidence 0.7 is ours.
    L = -(1/|A|) sum_i (1/|P(i)|) sum_{p in P(i)} log softmax_p(h_i . k / tau); a query's own teacher key is
    one of its positives (two views of one point).
    """

    name = "async_supcon"

    def __init__(self, weight: float = 1.0, schedule=None, temperature: float = 0.07, threshold: float = 0.7,
                 anchors: int = 512) -> None:
        super().__init__(weight, schedule)
        self.temperature, self.threshold, self.anchors = temperature, threshold, anchors

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        if ctx.unl is None:
            return zero_loss(ctx), {}
        index, labels = confident_anchors(ctx.unl, self.threshold, self.anchors)
        if len(index) < 2:
            return zero_loss(ctx), {}
        keys, same = teacher_keys(ctx.unl, index)
        loss = supcon(normalise(ctx.unl.feats[index]), keys, labels, labels, self.temperature, same_set=same)
        return loss.mean(), {"anchors": float(len(index))}


@register
class LogitAnchorMSE(LossTerm):
    """Squared distance of the student's logits to the frozen student's on unlabelled points.

    mean_i ||z_i - z_frozen,i||^2 / C (CoACT's consistency term, weight 1).
    """

    name = "logit_anchor"
    on_unlabelled = True
    needs_frozen_student = True

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        if ctx.unl is None or ctx.frozen is None:
            return zero_loss(ctx), {}
        return ((ctx.unl.logits - ctx.frozen.logits.detach()) ** 2).mean(), {}


@torch.no_grad()
def prototype_head_init(linear: nn.Linear, feats: Tensor, labels: Tensor) -> None:
    """Set each class's weight row to its normalised mean input feature (bias 0): a cosine-like head whose
    argmax on each class mean is that class. Classes without points keep their rows."""
    for c in labels.unique():
        linear.weight[c] = normalise(feats[labels == c].mean(0)).to(linear.weight)
    if linear.bias is not None:
        linear.bias.zero_()
