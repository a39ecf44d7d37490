"""LegoGCD (Cao et al., CVPR 2024): debiased local entropy and dual-view KL on unlabelled points.

From "Solving the catastrophic forgetting problem in generalized category discovery":

* ``lego_entropy``: on confident points, pull the prediction towards its own (detached, sharpened when the
  temperature is below 1) version, with logits shifted by ``tau * log q_bar`` (a running class marginal)
  so self-training does not drift towards the dominant gingiva class.
* ``dual_view_kl``: KL between the student's posteriors on the weak and strong views of the same points.

The default temperatures are 1. The published ones (``lego_entropy``: temperature 0.05, confidence
temperature 0.1; ``dual_view_kl``: 0.1) were chosen for cosine-similarity logits in [-1, 1]; on geot's
unbounded linear logits they scale gradients 10-20x, and training with them diverged on the real scans while
temperature 1 trained (docs/benchmarks.md). They stay reachable through ``args`` (docs/modules.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from geot.labels import NUM_CLASSES
from geot.modules import LossTerm, StepContext, register


@register
class DebiasedLocalEntropy(LossTerm):
    """Self-entropy of confident unlabelled points against a debiased target (sharpened when temperature < 1)."""

    name = "lego_entropy"
    on_unlabelled = True

    def __init__(self, weight: float = 2.0, schedule=None, threshold: float = 0.7, temperature: float = 1.0,
                 confidence_temperature: float = 1.0, adjust: float = 0.4, momentum: float = 0.999,
                 num_classes: int = NUM_CLASSES, detach: bool = True) -> None:
        super().__init__(weight, schedule)
        self.threshold, self.temperature, self.conf_t = threshold, temperature, confidence_temperature
        self.adjust, self.momentum, self.detach = adjust, momentum, detach
        self.register_buffer("marginal", torch.full((num_classes,), 1.0 / num_classes))

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        if ctx.unl is None:
            return ctx.lab.logits.sum() * 0, {}
        z = ctx.unl.logits
        with torch.no_grad():
            self.marginal.mul_(self.momentum).add_((1 - self.momentum) * torch.softmax(z, dim=1).mean(0))
            mask = torch.softmax(z / self.conf_t, dim=1).max(dim=1).values >= self.threshold
        q = torch.softmax(z / self.temperature, dim=1)
        q = q.detach() if self.detach else q
        log_p = torch.log_softmax(z / self.temperature + self.adjust * torch.log(self.marginal), dim=1)
        per_point = -(q * log_p).sum(dim=1)
        loss = (per_point * mask).sum() / mask.sum().clamp(min=1)
        return loss, {"mask": mask.float().mean().item()}


@register
class DualViewKL(LossTerm):
    """KL between the student's posteriors on the weak and the strong view of the same points.

    Reads the student's weak-view logits (``ctx.unl.logits_weak``), which cost one extra student pass
    per step, hence ``needs_weak_student``.
    """

    name = "dual_view_kl"
    on_unlabelled = True
    needs_weak_student = True

    def __init__(self, weight: float = 1.0, schedule=None, temperature: float = 1.0) -> None:
        super().__init__(weight, schedule)
        self.temperature = temperature

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        if ctx.unl is None or ctx.unl.logits_weak is None:
            return ctx.lab.logits.sum() * 0, {}
        return kl_between(ctx.unl.logits_weak, ctx.unl.logits, self.temperature), {}


def kl_between(logits_a: Tensor, logits_b: Tensor, temperature: float = 1.0) -> Tensor:
    """Mean over points of KL(softmax(a/T) || softmax(b/T))."""
    log_a = F.log_softmax(logits_a / temperature, dim=1)
    log_b = F.log_softmax(logits_b / temperature, dim=1)
    return (log_a.exp() * (log_a - log_b)).sum(dim=1).mean()
