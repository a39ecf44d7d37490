"""Conditioning dropout as a consistency term, after the text dropout of McKee et al. ("Language-guided
music recommendation for video via prompt analogies", CVPR 2023).

Predictions must survive dropping conditioning channels: KL(p || p_dropped) on the head, with channels
of the point features dropped before it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from geot.modules import LossTerm, StepContext, register
from geot.modules.common import zero_loss


def drop_mask(shape: tuple[int, int], p: float, channels: list[int] | None = None,
              device: torch.device | str = "cpu") -> Tensor:
    """True where a feature is dropped: each (point, channel) with probability ``p``, only in ``channels``."""
    mask = torch.rand(shape) < p
    if channels is not None:
        allowed = torch.zeros(shape[1], dtype=torch.bool)
        allowed[channels] = True
        mask &= allowed
    return mask.to(device)


@register
class ConditioningDropout(LossTerm):
    """Consistency of the head's prediction when feature channels are dropped: KL(p || p_dropped).

    KL(p || softmax(head(f with dropped channels set to 0))), p detached. The paper drops the conditioning
    input itself; geot's modules cannot change the network's input, so channels of the point features are
    dropped before the head instead. p_drop = 0.2 (the paper's value was not verified; 0.1-0.3 is the usual
    range); ``channels`` limits dropping to some feature channels.
    """

    name = "feature_dropout"

    def __init__(self, weight: float = 1.0, schedule=None, p: float = 0.2, channels: list[int] | None = None) -> None:
        super().__init__(weight, schedule)
        self.p, self.channels = p, channels

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        pairs = [(part.feats, part.logits) for part in (ctx.unl, ctx.lab) if part is not None]
        if ctx.head is None or not pairs:
            return zero_loss(ctx), {}
        feats, logits = torch.cat([f for f, _ in pairs]), torch.cat([z for _, z in pairs])
        mask = drop_mask(tuple(feats.shape), self.p, self.channels, feats.device)
        dropped = ctx.head(feats.masked_fill(mask, 0.0))
        target = torch.log_softmax(logits.detach(), dim=1)
        loss = F.kl_div(torch.log_softmax(dropped, dim=1), target, log_target=True, reduction="batchmean")
        return loss, {"dropped": mask.float().mean().item()}
