"""Cr-KD: class-relation knowledge distillation (Gu et al., "Class-relation knowledge distillation for novel
class discovery", ICCV 2023).

Distils the frozen student's class relations (its softened distribution over the known classes) into the
student on unlabelled points, so self-training keeps what the supervised model knew about which teeth
resemble each other.
"""

from __future__ import annotations

import torch
from torch import Tensor

from geot.modules import LossTerm, StepContext, register
from geot.modules.common import zero_loss


def class_relation_kd(logits: Tensor, logits_frozen: Tensor, classes: Tensor | None = None,
                      temperature: float = 0.1, kd_temperature: float = 4.0) -> tuple[Tensor, Tensor]:
    """Cr-KD's term: T^2 mean_i wbar_i sum_{c in K} -r_old,ic log r_new,ic; also returns the gates wbar.

    r = softmax over the classes K of logits / (tau T); the gate w_i is the student's (detached)
    probability mass on K, normalised to mean 1 over the batch (all ones when K holds every class).
    """
    t = temperature * kd_temperature
    if classes is None:
        classes = torch.arange(logits.shape[1], device=logits.device)
    r_old = torch.softmax(logits_frozen.detach()[:, classes] / t, dim=1)
    log_r_new = torch.log_softmax(logits[:, classes] / t, dim=1)
    with torch.no_grad():
        gate = torch.softmax(logits / t, dim=1)[:, classes].sum(dim=1)
        gate = gate / gate.mean().clamp(min=1e-12)
    per_point = -(r_old * log_r_new).sum(dim=1)
    return kd_temperature ** 2 * (gate * per_point).mean(), gate


@register
class ClassRelationKD(LossTerm):
    """The frozen student's class relations distilled into the student on unlabelled points.

    Defaults alpha = 0.1 (weight), tau = 0.1, T = 4 from the Cr-KD scripts. ``classes`` is the known set K
    (default: every class). Without the frozen student the teacher's log-posteriors stand in for its logits.
    """

    name = "cr_kd"
    on_unlabelled = True
    needs_frozen_student = True

    def __init__(self, weight: float = 0.1, schedule=None, temperature: float = 0.1, kd_temperature: float = 4.0,
                 classes: list[int] | None = None) -> None:
        super().__init__(weight, schedule)
        self.temperature, self.kd_temperature = temperature, kd_temperature
        self.classes = None if classes is None else torch.as_tensor(classes, dtype=torch.long)

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        if ctx.unl is None:
            return zero_loss(ctx), {}
        frozen = ctx.frozen.logits if ctx.frozen is not None else torch.log(ctx.unl.probs_teacher.clamp(min=1e-8))
        classes = None if self.classes is None else self.classes.to(ctx.unl.logits.device)
        loss, gate = class_relation_kd(ctx.unl.logits, frozen, classes, self.temperature, self.kd_temperature)
        return loss, {"gate_min": gate.min().item()}
