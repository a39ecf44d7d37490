"""MMRL's feature alignment (Guo & Gu, "MMRL: multi-modal representation learning for vision-language
models", CVPR 2025).

Keeps the student's point features pointing where the frozen student's do: lambda (1 - mean cos), a hold
on the representation while pseudo labels pull it around.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from geot.modules import LossTerm, StepContext, register
from geot.modules.common import zero_loss


def direction_gap(feats: Tensor, reference: Tensor) -> Tensor:
    """Per point 1 - cos(f, f_ref): 0 for parallel, 2 for antiparallel; no gradient into the reference."""
    return 1 - F.cosine_similarity(feats, reference.detach(), dim=-1)


@register
class FrozenFeatureAlignment(LossTerm):
    """Keeps the student's point features pointing where the frozen student's do.

    lambda (1 - mean cos(f_i, f_i^frozen)) over labelled and unlabelled points. lambda = 1 (MMRL's default;
    the paper tunes 0.01-7 per data set). The frozen features are the frozen student's (the supervised-only
    model) rather than a pretrained backbone's, since geot trains from scratch.
    """

    name = "mmrl_align"
    needs_frozen_student = True

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        gaps = []
        if ctx.frozen is not None and ctx.unl is not None:
            gaps.append(direction_gap(ctx.unl.feats, ctx.frozen.feats))
        if ctx.frozen is not None and ctx.lab is not None:
            gaps.append(direction_gap(ctx.lab.feats, ctx.frozen.feats_lab))
        if not gaps:
            return zero_loss(ctx), {}
        return torch.cat(gaps).mean(), {}
