"""What one training step tells the modules, in parts: labelled scans, unlabelled scans, the frozen student.

A module reads the part it works on and skips its work when that part is absent (``None``): there are no
unlabelled scans during the supervised warm-up, and the frozen student exists only when a module asks for
it. Within a part every field is filled, except the two marked optional.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn


@dataclass
class LabelledPart:
    """The student on the step's labelled scans."""

    logits: Tensor   # (P_l, C)
    labels: Tensor   # (P_l,)
    feats: Tensor    # (P_l, D) the backbone's point features, the head's input


@dataclass
class UnlabelledPart:
    """The unlabelled points of the step, in batch order.

    ``point_index`` holds the (dataset scan index, vertex index) of each point, a stable identity across
    epochs, sampling and views, for modules that remember something per point.
    """

    logits: Tensor                  # (P_u, C) student, strong view
    feats: Tensor                   # (P_u, D)
    probs_teacher: Tensor           # (P_u, C) pseudo-label source, weak view
    feats_teacher: Tensor | None    # (P_u, D) features of the pseudo-label source, weak view
    point_index: Tensor             # (P_u, 2) long: scan, vertex
    pos: Tensor                     # (P_u, 3) un-augmented canonical positions
    batch: Tensor                   # (P_u,) scan of each point within the step
    logits_weak: Tensor | None = None  # (P_u, C) student, weak view: only when a module ``needs_weak_student``


@dataclass
class FrozenPart:
    """The frozen student: a copy of the student taken when unlabelled scans join training (the model after
    the supervised warm-up), run on the same inputs. Offered only when a module ``needs_frozen_student``."""

    logits: Tensor     # (P_u, C) strong view of the unlabelled scans
    feats: Tensor      # (P_u, D)
    feats_lab: Tensor  # (P_l, D) labelled scans


@dataclass
class StepContext:
    """One training step, for the modules to read.

    ``head`` is the classifier, for modules that score features. Target transforms that filter pseudo
    labels multiply their per-point weights into ``target_weight`` (``weigh``); the method's objective
    averages its per-point loss with them. ``ramp`` is the ramp-up factor of the unsupervised loss this
    step, in [0, 1].
    """

    epoch: int
    step: int
    epochs: int
    head: nn.Module | None
    lab: LabelledPart | None
    unl: UnlabelledPart | None = None
    frozen: FrozenPart | None = None
    target_weight: Tensor | None = None  # (P_u,) weight of each point in the unsupervised objective
    ramp: float = 1.0

    def weigh(self, weight: Tensor) -> None:
        """Multiply per-point weights (0 drops a pseudo label) into ``target_weight``."""
        weight = weight.detach().float()
        self.target_weight = weight if self.target_weight is None else self.target_weight * weight
