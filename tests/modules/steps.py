"""Step contexts for module tests: a test names the tensors it cares about, the rest of each part is filled.

A part exists when any of its tensors is given (``labels`` makes a labelled part, ``probs_teacher`` an
unlabelled one, ``frozen_*`` the frozen student); its other fields are zeros of the matching size, except
``feats_teacher`` and ``logits_weak``, which stay None as in a step that does not offer them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from geot.labels import NUM_CLASSES
from geot.modules import FrozenPart, LabelledPart, StepContext, UnlabelledPart


def _size(*tensors: Tensor | None, dim: int, default: int) -> int:
    return next((t.shape[dim] for t in tensors if t is not None and t.dim() > dim), default)


def make_ctx(epoch: int = 0, step: int = 0, epochs: int = 1, head: nn.Module | None = None, *,
         logits_lab: Tensor | None = None, labels: Tensor | None = None, feats_lab: Tensor | None = None,
         logits: Tensor | None = None, feats: Tensor | None = None, probs_teacher: Tensor | None = None,
         feats_teacher: Tensor | None = None, point_index: Tensor | None = None, pos: Tensor | None = None,
         batch: Tensor | None = None, logits_weak: Tensor | None = None, frozen_logits: Tensor | None = None,
         frozen_feats: Tensor | None = None, frozen_feats_lab: Tensor | None = None) -> StepContext:
    classes = _size(logits_lab, logits, probs_teacher, logits_weak, frozen_logits, dim=1, default=NUM_CLASSES)
    dim = _size(feats_lab, feats, feats_teacher, frozen_feats, frozen_feats_lab, dim=1, default=1)
    lab = unl = frozen = None
    if any(t is not None for t in (logits_lab, labels, feats_lab)):
        n = _size(logits_lab, labels, feats_lab, dim=0, default=0)
        lab = LabelledPart(logits_lab if logits_lab is not None else torch.zeros(n, classes),
                           labels if labels is not None else torch.zeros(n, dtype=torch.long),
                           feats_lab if feats_lab is not None else torch.zeros(n, dim))
    if any(t is not None for t in (logits, feats, probs_teacher, feats_teacher, point_index, pos, batch, logits_weak)):
        n = _size(logits, feats, probs_teacher, feats_teacher, point_index, pos, batch, logits_weak, dim=0, default=0)
        unl = UnlabelledPart(
            logits if logits is not None else torch.zeros(n, classes),
            feats if feats is not None else torch.zeros(n, dim),
            probs_teacher if probs_teacher is not None else torch.full((n, classes), 1.0 / classes),
            feats_teacher,
            point_index if point_index is not None else torch.stack([torch.zeros(n, dtype=torch.long),
                                                                     torch.arange(n)], 1),
            pos if pos is not None else torch.zeros(n, 3),
            batch if batch is not None else torch.zeros(n, dtype=torch.long),
            logits_weak)
    if any(t is not None for t in (frozen_logits, frozen_feats, frozen_feats_lab)):
        n_unl = len(unl.logits) if unl is not None else 0
        n_lab = len(lab.labels) if lab is not None else 0
        frozen = FrozenPart(frozen_logits if frozen_logits is not None else torch.zeros(n_unl, classes),
                            frozen_feats if frozen_feats is not None else torch.zeros(n_unl, dim),
                            frozen_feats_lab if frozen_feats_lab is not None else torch.zeros(n_lab, dim))
    return StepContext(epoch, step, epochs, head, lab, unl, frozen)
