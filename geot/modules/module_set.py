"""The modules of one run, as one ``nn.Module``: what the trainer calls, and one state_dict to checkpoint."""

from __future__ import annotations

from torch import Tensor, nn

from geot.modules.base import AuxModule
from geot.modules.context import StepContext


class ModuleSet(nn.Module):
    """The modules of a run, grouped by kind; one state_dict for the checkpoint."""

    def __init__(self, modules: list[AuxModule]) -> None:
        super().__init__()
        self.all = nn.ModuleList(modules)

    @property
    def needs_weak_student(self) -> bool:
        """Whether a module reads the student's logits on the weak view (one more student pass per step)."""
        return any(m.needs_weak_student for m in self.all)

    @property
    def needs_frozen_student(self) -> bool:
        """Whether a module reads the frozen student (one more forward pass per step, kept in checkpoints)."""
        return any(m.needs_frozen_student for m in self.all)

    def of(self, kind: str) -> list[AuxModule]:
        return [m for m in self.all if m.kind == kind]

    def loss(self, ctx: StepContext) -> tuple[Tensor | None, dict[str, float]]:
        """The weighted sum of the loss terms (None without any that acts this step), and their logs."""
        total, logs = None, {}
        for term in self.of("loss"):
            w = term.scale(ctx.epoch + ctx.step / 1e9) * (ctx.ramp if term.follows_ramp() else 1.0)
            if w == 0:
                continue
            value, term_logs = term(ctx)
            total = w * value if total is None else total + w * value
            logs.update({f"{term.name}/{k}": v for k, v in term_logs.items()})
        return total, logs

    def targets(self, ctx: StepContext, targets: Tensor) -> Tensor:
        """The pseudo-label targets after every active target transform, in list order."""
        for transform in self.of("target"):
            if transform.scale(ctx.epoch) > 0:
                targets = transform(ctx, targets)
        return targets

    def on_epoch_end(self, epoch: int) -> None:
        for module in self.all:
            module.on_epoch_end(epoch)
