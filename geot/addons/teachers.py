"""Terms that hold the student to another model: a frozen supervised-only anchor, or a local-mean teacher.

* ``cr_kd`` (Cr-KD, Gu et al. 2023): distil the anchor's class relations (its softened distribution over the
  known classes) into the student on unlabelled points.
* ``logit_anchor`` (CoACT's consistency term, Roy et al. 2024): squared distance of student and anchor logits.
* ``mmrl_align`` (MMRL, Guo & Gu 2025): keep student point features pointing where the anchor's do.
* ``local_mean_teacher`` (OGEN's adaptive local mean teacher, Zang et al. 2024): pseudo labels from an
  average of the teacher's recent predictions for each point, over a window that grows during training,
  blended with their spatial neighbourhood mean.

The anchor is the frozen copy of the student the trainer takes when unlabelled scans join training (the
model after supervised warm-up); modules ask for it with ``needs_anchor = True``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from geot.addons.base import LossTerm, PointMemory, StepContext, TargetTransform, register
from geot.addons.common import zero_loss
from geot.ops import knn


def class_relation_kd(logits: Tensor, logits_anchor: Tensor, classes: Tensor | None = None,
                      temperature: float = 0.1, kd_temperature: float = 4.0) -> tuple[Tensor, Tensor]:
    """Cr-KD's term: T^2 mean_i wbar_i sum_{c in K} -r_old,ic log r_new,ic; also returns the gates wbar.

    r = softmax over the classes K of logits / (tau T); the gate w_i is the student's (detached)
    probability mass on K, normalised to mean 1 over the batch (all ones when K holds every class).
    """
    t = temperature * kd_temperature
    if classes is None:
        classes = torch.arange(logits.shape[1], device=logits.device)
    r_old = torch.softmax(logits_anchor.detach()[:, classes] / t, dim=1)
    log_r_new = torch.log_softmax(logits[:, classes] / t, dim=1)
    with torch.no_grad():
        gate = torch.softmax(logits / t, dim=1)[:, classes].sum(dim=1)
        gate = gate / gate.mean().clamp(min=1e-12)
    per_point = -(r_old * log_r_new).sum(dim=1)
    return kd_temperature ** 2 * (gate * per_point).mean(), gate


@register
class ClassRelationKD(LossTerm):
    """Loss ``cr_kd``: defaults alpha = 0.1 (weight), tau = 0.1, T = 4 from the Cr-KD scripts.

    ``classes`` is the known set K (default: all 17). Without an anchor (no supervised warm-up yet) the
    teacher's log-posteriors stand in for the anchor logits.
    """

    name = "cr_kd"
    on_unlabelled = True
    needs_anchor = True

    def __init__(self, weight: float = 0.1, schedule=None, temperature: float = 0.1, kd_temperature: float = 4.0,
                 classes: list[int] | None = None) -> None:
        super().__init__(weight, schedule)
        self.temperature, self.kd_temperature = temperature, kd_temperature
        self.classes = None if classes is None else torch.as_tensor(classes, dtype=torch.long)

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        if ctx.logits is None:
            return zero_loss(ctx), {}
        anchor = ctx.logits_anchor
        if anchor is None:
            anchor = torch.log(ctx.probs_teacher.clamp(min=1e-8))
        classes = None if self.classes is None else self.classes.to(ctx.logits.device)
        loss, gate = class_relation_kd(ctx.logits, anchor, classes, self.temperature, self.kd_temperature)
        return loss, {"gate_min": gate.min().item()}


@register
class LogitAnchorMSE(LossTerm):
    """Loss ``logit_anchor``: mean_i ||z_i - z_anchor,i||^2 / C on unlabelled points (CoACT, weight 1)."""

    name = "logit_anchor"
    on_unlabelled = True
    needs_anchor = True

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        if ctx.logits is None or ctx.logits_anchor is None:
            return zero_loss(ctx), {}
        return ((ctx.logits - ctx.logits_anchor.detach()) ** 2).mean(), {}


def direction_gap(feats: Tensor, reference: Tensor) -> Tensor:
    """Per point 1 - cos(f, f_ref): 0 for parallel, 2 for antiparallel; no gradient into the reference."""
    return 1 - F.cosine_similarity(feats, reference.detach(), dim=-1)


@register
class FrozenFeatureAlignment(LossTerm):
    """Loss ``mmrl_align``: lambda (1 - mean cos(f_i, f_i^frozen)) over labelled and unlabelled points.

    lambda = 1 (MMRL's default; the paper tunes 0.01-7 per data set). The frozen features are the anchor's
    (the supervised-only model) rather than a self-supervised backbone's, since geot trains from scratch.
    """

    name = "mmrl_align"
    needs_anchor = True

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        gaps = []
        if ctx.feats is not None and ctx.feats_anchor is not None:
            gaps.append(direction_gap(ctx.feats, ctx.feats_anchor))
        if ctx.feats_lab is not None and ctx.feats_anchor_lab is not None:
            gaps.append(direction_gap(ctx.feats_lab, ctx.feats_anchor_lab))
        if not gaps:
            return zero_loss(ctx), {}
        return torch.cat(gaps).mean(), {}


def neighbourhood_mean(values: Tensor, pos: Tensor, batch: Tensor, k: int) -> Tensor:
    """Mean of ``values`` over each point's ``k`` nearest points (itself included) in its own scan."""
    query, neighbour = knn(pos, pos, k, batch, batch)
    sums = torch.zeros_like(values).index_add_(0, query, values[neighbour])
    counts = torch.bincount(query, minlength=len(values)).clamp(min=1).to(values)
    return sums / counts[:, None]


@register
class AdaptiveLocalMeanTeacher(TargetTransform):
    """Target transform ``local_mean_teacher``.

    OGEN's teacher is the average of the student's recent states over a window W_t that grows during
    training. Here the average runs over the teacher's predictions for each point (a ``PointMemory``): an
    EMA with momentum 1 - 1/W_e, where W_e grows linearly from ``window_min`` to ``window_max`` visits of
    the point over the run. The result is blended with its mean over the ``k`` nearest points of the scan
    (weight ``spatial``). Hard targets come back as the one-hot argmax of the blend; soft targets are
    replaced by it. Window sizes and the spatial blend are not verified (OGEN gives no point-cloud values).
    """

    name = "local_mean_teacher"

    def __init__(self, weight: float = 1.0, schedule=None, window_min: float = 1.0, window_max: float = 5.0,
                 spatial: float = 0.3, k: int = 8, num_classes: int = 17) -> None:
        super().__init__(weight, schedule)
        self.window_min, self.window_max, self.spatial, self.k = window_min, window_max, spatial, k
        self.memory = PointMemory(num_classes)

    def window(self, epoch: int, epochs: int) -> float:
        progress = epoch / max(epochs - 1, 1)
        return self.window_min + (self.window_max - self.window_min) * min(max(progress, 0.0), 1.0)

    def forward(self, ctx: StepContext, targets: Tensor) -> Tensor:
        momentum = 1.0 - 1.0 / max(self.window(ctx.epoch, ctx.epochs), 1.0)
        index = ctx.point_index.cpu()
        previous, seen = self.memory.get(index)
        probs = ctx.probs_teacher.detach()
        previous, seen = previous.to(probs), seen.to(probs.device)
        mean = torch.where(seen[:, None], momentum * previous + (1 - momentum) * probs, probs)
        self.memory.set(index, mean.cpu())
        if self.spatial > 0 and ctx.pos is not None:
            mean = (1 - self.spatial) * mean + self.spatial * neighbourhood_mean(mean, ctx.pos, ctx.batch, self.k)
        mean = mean / mean.sum(dim=1, keepdim=True)
        if bool((targets.max(dim=1).values == 1).all()):
            return F.one_hot(mean.argmax(dim=1), targets.shape[1]).to(targets)
        return mean.to(targets)
