"""What the student learns from unlabelled scans, one class per method, all with the same call.

``objective(logits_strong, probs_weak, targets, raw_pos, batch, weight=None)`` gets the student's logits on
the strong view, the pseudo-label source's posteriors on the weak view of the same points (no gradient), the
targets made from them (``objective.targets(probs_weak)``, possibly rewritten by target-transform modules),
the un-augmented positions and optional per-point weights (target-transform modules that filter pseudo
labels set them; 0 drops a point); it returns the unsupervised loss and a dict of numbers to log.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geot.config import GeoTConfig, SemiConfig
from geot.method.clgs import ArchPrior, row_normalise
from geot.method.idtm import ClassLevelState, IDTMHead, anchor_matrix, posterior_confusion
from geot.method.losses import corrected_nll, masked_mean, poly1_focal, soft_cross_entropy
from geot.method.plgr import plgr_loss


class Objective(nn.Module):
    """Common part: how targets are made from the pseudo-label source's posteriors."""

    hard_targets = True

    def targets(self, probs_weak: Tensor) -> Tensor:
        """One-hot pseudo labels (or the soft posteriors themselves for consistency methods)."""
        if not self.hard_targets:
            return probs_weak
        return F.one_hot(probs_weak.argmax(dim=1), probs_weak.shape[1]).to(probs_weak.dtype)


class MeanTeacherObjective(Objective):
    """Consistency: squared distance between student and teacher posteriors (Tarvainen & Valpola 2017)."""

    hard_targets = False

    def forward(self, logits: Tensor, probs_weak: Tensor, targets: Tensor, raw_pos: Tensor,
                batch: Tensor, weight: Tensor | None = None) -> tuple[Tensor, dict]:
        loss = masked_mean(((torch.softmax(logits, dim=1) - targets) ** 2).sum(dim=1), weight)
        return loss, {"consistency": loss.item()}


class PseudoLabelObjective(Objective):
    """Cross-entropy on confident hard pseudo labels (FixMatch, Sohn et al. 2020)."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, logits: Tensor, probs_weak: Tensor, targets: Tensor, raw_pos: Tensor,
                batch: Tensor, weight: Tensor | None = None) -> tuple[Tensor, dict]:
        mask = (probs_weak.max(dim=1).values >= self.threshold).to(logits.dtype)
        mask = mask if weight is None else mask * weight
        loss = masked_mean(soft_cross_entropy(logits, targets), mask)
        return loss, {"pseudo": loss.item(), "mask": mask.mean().item()}


class GeoTObjective(Objective):
    """Pseudo labels explained through per-point transition matrices, regularised by PLGR and CLGS."""

    def __init__(self, cfg: GeoTConfig, threshold: float = 0.0) -> None:
        super().__init__()
        self.cfg, self.threshold = cfg, threshold
        # the paper trains on hard pseudo labels; soft ones keep the teacher's doubt between arch neighbours
        self.hard_targets = not cfg.soft_targets
        self.head = IDTMHead(projection="softmax" if cfg.correction == "probs" else "clamp")
        self.prior = ArchPrior(cfg.clgs_sigma, cfg.sigma_softplus, reference_bug=cfg.rownorm_bug)
        self.state = ClassLevelState()

    def observe_labelled(self, logits: Tensor, target: Tensor) -> None:
        """Refresh the class-mean conditioning from a labelled batch (clean labels)."""
        self.state.update_class_means(torch.softmax(logits.detach(), dim=1), target, self.cfg.class_ema,
                                      reference_bug=self.cfg.class_mean == "reference_bug")

    def class_level(self) -> Tensor:
        """Class-level matrix: EMA of per-batch estimates blended with the arch prior (CLGS)."""
        w = self.cfg.clgs_weight
        base = self.state.transition.clone()
        if w == 0:
            return base
        return row_normalise((1 - w) * base + w * self.prior(), self.cfg.rownorm_bug)

    def forward(self, logits: Tensor, probs_weak: Tensor, targets: Tensor, raw_pos: Tensor,
                batch: Tensor, weight: Tensor | None = None) -> tuple[Tensor, dict]:
        cfg = self.cfg
        conf = probs_weak.max(dim=1).values
        pseudo = targets.argmax(dim=1)
        mask = (conf >= self.threshold).to(logits.dtype) if self.threshold > 0 else None
        if weight is not None:
            mask = weight.to(logits.dtype) if mask is None else mask * weight
        probs = torch.softmax(logits, dim=1)
        if not cfg.idtm:
            loss = masked_mean(soft_cross_entropy(logits, targets), mask)
            return loss, {"pseudo": loss.item()}
        t_ins = self.head(probs.detach(), self.state.class_means)
        w = cfg.instance_weight
        t = row_normalise((1 - w) * self.class_level()[None] + w * t_ins)
        if cfg.correction == "probs":
            noisy = corrected_nll(probs, t, targets)
        else:  # reference: logits mixed by T, then a sigmoid focal loss
            noisy = poly1_focal(torch.einsum("pa,pab->pb", logits, t), pseudo)
        loss = masked_mean(noisy, mask)
        logs = {"pseudo": loss.item()}
        if cfg.plgr_weight > 0:
            reg = plgr_loss(t_ins, pseudo, raw_pos, batch, cfg.plgr_k, cfg.plgr_sigma, cfg.plgr_sigma_absolute)
            loss = loss + cfg.plgr_weight * reg
            logs["plgr"] = reg.item()
        with torch.no_grad():
            if cfg.class_estimate == "posterior":
                estimate, trusted = posterior_confusion(probs_weak, pseudo, mask)
            else:
                estimate, trusted = anchor_matrix(probs_weak, cfg.anchor_confidence)
            self.state.update_transition(estimate, cfg.class_ema, cfg.rownorm_bug, rows=trusted)
            # expected chance that a point's label is clean under its own matrix: sum_a p_a T_aa
            logs["diag"] = (probs * torch.diagonal(t, dim1=1, dim2=2)).sum(1).mean().item()
        return loss, logs


def build_objective(semi: SemiConfig, geot: GeoTConfig) -> Objective | None:
    """The unsupervised objective of ``semi.method`` (None for supervised training)."""
    if semi.method == "supervised":
        return None
    if semi.method == "mean_teacher":
        return MeanTeacherObjective()
    if semi.method == "fixmatch":
        return PseudoLabelObjective(0.9 if semi.threshold is None else semi.threshold)
    return GeoTObjective(geot, semi.threshold or 0.0)
