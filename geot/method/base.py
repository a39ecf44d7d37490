"""What a training method is: how it learns from labelled points and from the unlabelled scans' pseudo labels.

A method is one registered class. It declares whether an EMA teacher makes its pseudo labels
(``needs_teacher``; otherwise the student does, without gradient), whether it learns from unlabelled scans
at all, and its own config section (``Settings``, found under the method's name in the config). The trainer
calls ``labelled_loss`` on every step and, once unlabelled scans have joined, ``targets`` and ``forward``
on the unlabelled points:

``method(logits_strong, probs_weak, targets, raw_pos, batch, weight=None) -> (loss, logs)`` gets the
student's logits on the strong view, the pseudo-label source's posteriors on the weak view of the same points
(no gradient), the targets made from them (``method.targets(probs_weak)``, possibly rewritten by target-
transform modules), the un-augmented positions and optional per-point weights (0 drops a point).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch.nn.functional as F
from pydantic import BaseModel
from torch import Tensor, nn

from geot.registry import Registry

if TYPE_CHECKING:
    from geot.config import Config


class Method(nn.Module):
    """Base of every training method; the default is plain supervised learning."""

    name: ClassVar[str] = "method"
    Settings: ClassVar[type[BaseModel] | None] = None  # the method's config section, if it has one
    needs_teacher: ClassVar[bool] = False              # keeps an EMA teacher of the student
    needs_frozen_student: ClassVar[bool] = False       # keeps the student as it was when unlabelled scans joined
    learns_from_unlabelled: ClassVar[bool] = True
    hard_targets: bool = True                          # one-hot pseudo labels (False: the posteriors)

    def pseudo_label_source(self, epoch: int) -> str:
        """Which network makes this epoch's pseudo labels: "teacher" (EMA), "frozen" (the frozen student) or
        "student" (itself, without gradient)."""
        return "teacher" if self.needs_teacher else "student"

    def epochs_changed(self, cfg: Config) -> None:
        """A time budget has set (or moved) the run's last epoch, ``cfg.optim.epochs``: a method whose schedule
        is a share of the run recomputes it here, as a resumed run builds it from the saved config."""

    def loss_terms(self) -> dict[str, Tensor]:
        """The parts of the last unlabelled loss, weighted as summed (for per-term gradient diagnostics)."""
        return {}

    @classmethod
    def from_config(cls, cfg: Config) -> Method:
        """The method as ``cfg`` sets it up (its section and the shared ``semi`` settings)."""
        return cls()

    def labelled_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Loss on labelled points: cross-entropy."""
        return F.cross_entropy(logits, labels)

    def targets(self, probs_weak: Tensor) -> Tensor:
        """One-hot pseudo labels (or the soft posteriors themselves when ``hard_targets`` is off)."""
        if not self.hard_targets:
            return probs_weak
        return F.one_hot(probs_weak.argmax(dim=1), probs_weak.shape[1]).to(probs_weak.dtype)

    def forward(self, logits: Tensor, probs_weak: Tensor, targets: Tensor, raw_pos: Tensor, batch: Tensor,
                weight: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        raise NotImplementedError(f"method {self.name!r} does not learn from unlabelled scans")


METHODS: Registry = Registry("method", package="geot.method")


def build_method(cfg: Config) -> Method:
    """The method named by ``cfg.semi.method``."""
    return METHODS.get_class(cfg.semi.method).from_config(cfg)
