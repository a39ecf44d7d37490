"""The five interfaces an auxiliary module implements, and the schedule that scales its weight by epoch.

* ``LossTerm``: an extra loss on a training step (``forward(ctx) -> (loss, logs)``).
* ``TargetTransform``: rewrites the soft pseudo-label targets before the method's objective sees them.
* ``PredictionRule``: turns per-vertex posteriors into labels at prediction time (default argmax).
* ``ScanSelector``: ranks unlabelled scans for annotation.
* ``Explainer``: per-vertex maps (uncertainty, saliency) for a segmented scan.

Modules keep their state (per-point memories, running statistics) in ``state_dict`` so it travels in
checkpoints, and may refresh it in ``on_epoch_end``. What a module needs beyond the default step (the
student's weak view, the frozen student) it declares in the capability flags, so the trainer computes
those only when a module of the run asks.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from geot.modules.context import StepContext


class Schedule(BaseModel):
    """Weight multiplier by epoch: 0 before ``start``, a linear ramp over ``ramp`` epochs, 0 from ``stop``.

    ``follow_ramp`` also multiplies by the semi-supervised ramp-up of the method's unsupervised loss;
    by default loss terms on unlabelled predictions follow it, so they grow with the pseudo-label loss
    instead of hitting a barely trained student at full weight.
    """

    model_config = ConfigDict(extra="forbid")
    start: int = 0
    ramp: int = 0
    stop: int | None = None
    follow_ramp: bool | None = None  # None: the module's default (``LossTerm.on_unlabelled``)

    def __call__(self, epoch: float) -> float:
        if epoch < self.start or (self.stop is not None and epoch >= self.stop):
            return 0.0
        if self.ramp <= 0:
            return 1.0
        return min(1.0, (epoch - self.start + 1) / self.ramp)


class AuxModule(nn.Module):
    """Base of every auxiliary module: a name, a weight, a schedule, state that checkpoints with the run.

    ``kind`` names the interface (and the folder under ``geot/modules/``), ``name`` the registry entry.
    The capability flags say what the step must offer beyond its default parts; a module whose need
    depends on its arguments sets the flag on the instance in ``__init__``.
    """

    kind: ClassVar[str]
    name: ClassVar[str]
    needs_weak_student: ClassVar[bool] = False    # the student's logits on the weak view (``ctx.unl.logits_weak``)
    needs_frozen_student: ClassVar[bool] = False  # the frozen student's outputs (``ctx.frozen``)

    def __init__(self, weight: float = 1.0, schedule: Schedule | None = None) -> None:
        super().__init__()
        self.weight = weight
        self.schedule = schedule or Schedule()

    def scale(self, epoch: float) -> float:
        return self.weight * self.schedule(epoch)

    def on_epoch_end(self, epoch: int) -> None:
        """Refresh epoch-level state (prototypes, memories); most modules need nothing."""


class LossTerm(AuxModule):
    """An extra loss on a training step, added as weight x schedule(epoch) x term."""

    kind = "loss"
    on_unlabelled: ClassVar[bool] = False  # acts on unlabelled predictions: follows the ramp-up by default

    def follows_ramp(self) -> bool:
        return self.on_unlabelled if self.schedule.follow_ramp is None else self.schedule.follow_ramp

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        raise NotImplementedError


class TargetTransform(AuxModule):
    """Rewrites or weighs the pseudo-label targets before the method's objective sees them."""

    kind = "target"

    def forward(self, ctx: StepContext, targets: Tensor) -> Tensor:
        """(P_u, C) soft targets -> (P_u, C) soft targets, rows summing to 1 (no gradient)."""
        raise NotImplementedError


class PredictionRule(AuxModule):
    """Decides each vertex's class from its posterior at prediction time."""

    kind = "rule"

    def forward(self, probs: Tensor) -> Tensor:
        """(V, C) posteriors -> (V,) class indices."""
        raise NotImplementedError


class ScanSelector(AuxModule):
    """Ranks unlabelled scans for annotation."""

    kind = "selector"

    def forward(self, probs: list[Tensor], features: list[Tensor] | None = None) -> Tensor:
        """Per-scan posteriors (V_i, C) -> a score per scan; higher = annotate first."""
        raise NotImplementedError


class Explainer(AuxModule):
    """Per-point maps of a model's decision on one scan."""

    kind = "explainer"

    def forward(self, model: nn.Module, x: Tensor, pos: Tensor, batch: Tensor) -> dict[str, Tensor]:
        """Per-point maps, name -> (P,) tensor."""
        raise NotImplementedError


# each kind's interface by its name, in the order the docs and ``geot modules`` list them
KINDS: dict[str, type[AuxModule]] = {base.kind: base for base in
                                     (LossTerm, TargetTransform, PredictionRule, ScanSelector, Explainer)}
