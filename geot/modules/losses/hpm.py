"""HPM: hard patches mining (Wang et al., "Hard patches mining for masked image modeling", CVPR 2023).

Learn to predict where the loss is high, then use it:

* ``loss_predictor``: a small head on (detached) point features learns the *order* of the per-point
  pseudo-label loss (the student's cross-entropy against the teacher's pseudo label), with HPM's relative
  loss on random point pairs: -[1(l_j > l_k) log s(d) + 1(l_j < l_k) log(1 - s(d))], d = l^_j - l^_k.
  Its prediction (``predict``) is a map of likely label noise.
* ``hard_region_mask``: HPM's masking policy, a fraction alpha_e = 0.5 (e + 1) / E of the masked points
  taken where the predicted loss is highest and the rest at random (easy -> hard over training), for a
  masked-modelling view of a scan. geot has no masked pre-training stage yet, so nothing calls it in
  training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geot.modules import LossTerm, StepContext, register
from geot.modules.common import pseudo_labels, random_perm, zero_loss


def relative_loss(predicted: Tensor, target: Tensor, partner: Tensor) -> Tensor:
    """HPM's ranking loss over pairs (i, partner[i]) whose targets differ (0 when none does)."""
    diff_target = target - target[partner]
    valid = diff_target != 0
    if not valid.any():
        return predicted.sum() * 0
    diff = (predicted - predicted[partner])[valid]
    return F.binary_cross_entropy_with_logits(diff, (diff_target[valid] > 0).to(diff))


@register
class LossPredictorHead(LossTerm):
    """A small head that learns to rank points by their pseudo-label loss (a map of likely label noise).

    Trains only its own head (features are detached), weight 1 (HPM's). HPM predicts the reconstruction loss
    of masked patches; here the per-point pseudo-label loss.
    """

    name = "loss_predictor"
    on_unlabelled = True

    def __init__(self, weight: float = 1.0, schedule=None, feat_dim: int = 256, hidden: int = 64) -> None:
        super().__init__(weight, schedule)
        self.net = nn.Sequential(nn.Linear(feat_dim, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def predict(self, feats: Tensor) -> Tensor:
        """Predicted (relative) loss per point."""
        return self.net(feats.detach()).squeeze(-1)

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        if ctx.unl is None:
            return zero_loss(ctx), {}
        pseudo, _ = pseudo_labels(ctx.unl)
        target = F.cross_entropy(ctx.unl.logits.detach(), pseudo, reduction="none")
        predicted = self.predict(ctx.unl.feats)
        loss = relative_loss(predicted, target, random_perm(len(target), target.device))
        return loss, {"rank": loss.item()}


def hpm_alpha(epoch: int, epochs: int, top: float = 0.5) -> float:
    """Share of loss-guided masking at ``epoch``: ``top`` (e + 1) / E."""
    return top * (epoch + 1) / epochs


def hard_region_mask(scores: Tensor, ratio: float = 0.75, alpha: float = 0.0) -> Tensor:
    """Mask int(ratio N) of N points: the int(ratio N alpha) highest ``scores`` plus random others."""
    n = len(scores)
    n_mask = int(ratio * n)
    n_hard = int(n_mask * alpha)
    mask = torch.zeros(n, dtype=torch.bool, device=scores.device)
    hard = scores.topk(n_hard).indices if n_hard else scores.new_zeros(0, dtype=torch.long)
    mask[hard] = True
    rest = (~mask).nonzero().squeeze(1)
    mask[rest[random_perm(len(rest), scores.device)[: n_mask - n_hard]]] = True
    return mask
