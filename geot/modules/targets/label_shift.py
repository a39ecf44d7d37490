"""Per-scan label-shift correction of pseudo labels, after latent label shift (Roberts et al.,
"Unsupervised learning under latent label shift", NeurIPS 2022).

The teacher's posterior on each unlabelled scan is corrected for that scan's own class prior, estimated by
EM (``geot.modules.rules.label_shift``), before it becomes a pseudo label: a tooth the scan lacks stops
attracting labels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from geot.labels import NUM_CLASSES
from geot.modules import StepContext, TargetTransform, register
from geot.modules.rules.label_shift import adjust_posterior, em_prior, reference_prior


@register
class PerScanPriorTargets(TargetTransform):
    """Pseudo labels from each scan's teacher posterior corrected for that scan's class prior.

    Hard targets: the argmax of the corrected posterior; soft targets: reweighted by pi_d / pi. The learnt
    prior counts the labelled points of the run; ``iters`` = 100 EM steps, ``absent`` = 1e-3.
    """

    name = "prior_shift_targets"

    def __init__(self, weight: float = 1.0, schedule=None, iters: int = 100, absent: float = 1e-3,
                 floor: float = 0.5, num_classes: int = NUM_CLASSES) -> None:
        super().__init__(weight, schedule)
        self.iters, self.absent, self.floor = iters, absent, floor
        self.register_buffer("counts", torch.zeros(num_classes))

    def learnt_prior(self) -> Tensor | None:
        """Labelled point frequencies (add-one smoothed); None before any labelled point."""
        if self.counts.sum() == 0:
            return None
        return (self.counts + 1) / (self.counts.sum() + len(self.counts))

    def forward(self, ctx: StepContext, targets: Tensor) -> Tensor:
        if ctx.lab is not None and len(ctx.lab.labels):
            self.counts += torch.bincount(ctx.lab.labels, minlength=len(self.counts)).to(self.counts)
        prior = self.learnt_prior()
        batch = ctx.unl.batch
        hard = bool((targets.max(dim=1).values == 1).all())
        out = targets.clone()
        for b in batch.unique():
            m = batch == b
            p = ctx.unl.probs_teacher[m]
            pi = reference_prior(p, self.floor) if prior is None else prior.to(p)
            scan_prior = em_prior(p, pi, self.iters)
            if hard:
                adjusted = adjust_posterior(p, pi, scan_prior, self.absent)
                out[m] = F.one_hot(adjusted.argmax(dim=1), targets.shape[1]).to(targets)
            else:
                out[m] = adjust_posterior(targets[m], pi, scan_prior, self.absent)
        return out
