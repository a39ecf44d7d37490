"""Small generic regularisers on the head and the point features.

* ``head_diversity`` (MSGCoOp's diversity term): K extra linear heads on the point features, trained with
  cross-entropy, whose per-class weight vectors are kept apart by (1/C) sum_c mean_{i<j} cos^2(w_c^i, w_c^j);
  their disagreement is then an uncertainty signal (``HeadDiversityReg.disagreement``).
* ``energy_confusion`` (after ECAML): a small pull between the feature centroids of *adjacent* classes
  (tooth-metric distance 1), a metric-space label smoothing against over-confident separation of teeth
  that only position tells apart.
* ``feature_dropout`` (text dropout, after the prompt-analogies music recommender): predictions must
  survive dropping conditioning channels; as a consistency term KL(p || p_dropped) on the head.
* ``collapse_reg`` (T-JEPA's regularisation tokens, generic form): VICReg-style variance and covariance
  terms that keep point features from collapsing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geot.addons.base import LossTerm, StepContext, register
from geot.addons.common import labelled_and_confident, normalise, random_perm, zero_loss
from geot.addons.metric import tooth_metric


def diversity_penalty(weights: Tensor) -> Tensor:
    """(K, C, D) head weights -> mean over classes of the mean squared cosine over head pairs i < j."""
    unit = normalise(weights)
    cos = torch.einsum("icd,jcd->cij", unit, unit)
    k = weights.shape[0]
    upper = torch.triu(torch.ones(k, k, dtype=torch.bool, device=weights.device), diagonal=1)
    return (cos[:, upper] ** 2).mean()


@register
class HeadDiversityReg(LossTerm):
    """Loss ``head_diversity``: mean CE of 4 auxiliary linear heads on labelled and confident points plus
    ``diversity`` x the squared-cosine penalty. MSGCoOp uses 4 parallel prompts and sets the weights on the
    command line (no default): diversity = 1 here, not verified."""

    name = "head_diversity"
    context = ("feat_dim",)

    def __init__(self, weight: float = 1.0, schedule=None, heads: int = 4, diversity: float = 1.0,
                 threshold: float = 0.7, feat_dim: int = 256, num_classes: int = 17) -> None:
        super().__init__(weight, schedule)
        self.diversity, self.threshold = diversity, threshold
        self.heads = nn.Parameter(torch.randn(heads, num_classes, feat_dim) / feat_dim ** 0.5)
        self.bias = nn.Parameter(torch.zeros(heads, num_classes))

    def logits(self, feats: Tensor) -> Tensor:
        """(K, P, C) logits of every auxiliary head."""
        return torch.einsum("pd,kcd->kpc", feats, self.heads) + self.bias[:, None, :]

    @torch.no_grad()
    def disagreement(self, feats: Tensor) -> Tensor:
        """Per point, the mean total-variation distance of each head's posterior to the heads' mean."""
        probs = torch.softmax(self.logits(feats), dim=-1)
        return 0.5 * (probs - probs.mean(0)).abs().sum(-1).mean(0)

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        penalty = diversity_penalty(self.heads)
        feats, labels = labelled_and_confident(ctx, self.threshold)
        if feats is None:
            return self.diversity * penalty + zero_loss(ctx), {"diversity": penalty.item()}
        logits = self.logits(feats)
        ce = F.cross_entropy(logits.flatten(0, 1), labels.repeat(len(logits)))
        return ce + self.diversity * penalty, {"diversity": penalty.item(), "heads_ce": ce.item()}


def adjacent_pairs(max_distance: float = 1.0) -> Tensor:
    """(E, 2) class pairs a < b at tooth-metric distance <= ``max_distance`` (arch and mirror neighbours)."""
    d = torch.as_tensor(tooth_metric(), dtype=torch.float32)
    a, b = torch.nonzero((d <= max_distance) & (d > 0), as_tuple=True)
    keep = a < b
    return torch.stack([a[keep], b[keep]], 1)


def centroid_confusion(feats: Tensor, labels: Tensor, pairs: Tensor) -> Tensor:
    """Mean over the pairs whose two classes are both present of 1 - cos(centroid_a, centroid_b)."""
    emb = normalise(feats)
    num = int(pairs.max()) + 1 if len(pairs) else 1
    num = max(num, int(labels.max()) + 1)
    sums = torch.zeros(num, emb.shape[1], dtype=emb.dtype, device=emb.device).index_add(0, labels, emb)
    counts = torch.bincount(labels, minlength=num)
    present = (counts[pairs[:, 0]] > 0) & (counts[pairs[:, 1]] > 0)
    if not present.any():
        return feats.sum() * 0
    centroids = sums / counts.clamp(min=1)[:, None].to(emb)
    a, b = pairs[present, 0], pairs[present, 1]
    return (1 - F.cosine_similarity(centroids[a], centroids[b], dim=-1)).mean()


@register
class EnergyConfusionReg(LossTerm):
    """Loss ``energy_confusion``: weight 0.01 (small, as ECAML's adversarial confusion term); the energy
    here is 1 - cos of class centroids over adjacent pairs, since ECAML's exact energy and weight were not
    verified. Use a ``schedule`` to switch it off late in training."""

    name = "energy_confusion"

    def __init__(self, weight: float = 0.01, schedule=None, threshold: float = 0.7, max_distance: float = 1.0) -> None:
        super().__init__(weight, schedule)
        self.threshold = threshold
        self.register_buffer("pairs", adjacent_pairs(max_distance))

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        feats, labels = labelled_and_confident(ctx, self.threshold)
        if feats is None:
            return zero_loss(ctx), {}
        return centroid_confusion(feats, labels, self.pairs.to(labels.device)), {}


def drop_mask(shape: tuple[int, int], p: float, channels: list[int] | None = None,
              device: torch.device | str = "cpu") -> Tensor:
    """True where a feature is dropped: each (point, channel) with probability ``p``, only in ``channels``."""
    mask = torch.rand(shape) < p
    if channels is not None:
        allowed = torch.zeros(shape[1], dtype=torch.bool)
        allowed[channels] = True
        mask &= allowed
    return mask.to(device)


@register
class ConditioningDropout(LossTerm):
    """Loss ``feature_dropout``: KL(p || softmax(head(f with dropped channels set to 0))), p detached.

    The paper drops the conditioning input itself; geot's modules cannot change the network's input, so
    channels of the point features are dropped before the head instead. p_drop = 0.2 (the paper's value
    was not verified; 0.1-0.3 is the usual range); ``channels`` limits dropping to some feature channels.
    """

    name = "feature_dropout"

    def __init__(self, weight: float = 1.0, schedule=None, p: float = 0.2, channels: list[int] | None = None) -> None:
        super().__init__(weight, schedule)
        self.p, self.channels = p, channels

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        pairs = [(f, z) for f, z in ((ctx.feats, ctx.logits), (ctx.feats_lab, ctx.logits_lab))
                 if f is not None and z is not None]
        if ctx.head is None or not pairs:
            return zero_loss(ctx), {}
        feats, logits = torch.cat([f for f, _ in pairs]), torch.cat([z for _, z in pairs])
        mask = drop_mask(tuple(feats.shape), self.p, self.channels, feats.device)
        dropped = ctx.head(feats.masked_fill(mask, 0.0))
        target = torch.log_softmax(logits.detach(), dim=1)
        loss = F.kl_div(torch.log_softmax(dropped, dim=1), target, log_target=True, reduction="batchmean")
        return loss, {"dropped": mask.float().mean().item()}


def variance_covariance(feats: Tensor, target_std: float = 1.0) -> tuple[Tensor, Tensor]:
    """VICReg's terms: mean_j relu(gamma - std_j) and sum_{i != j} cov_ij^2 / D."""
    centred = feats - feats.mean(0)
    std = torch.sqrt(centred.var(0) + 1e-4)
    variance = F.relu(target_std - std).mean()
    cov = centred.T @ centred / max(len(feats) - 1, 1)
    off = cov - torch.diag(cov.diagonal())
    return variance, (off ** 2).sum() / feats.shape[1]


@register
class AntiCollapseReg(LossTerm):
    """Loss ``collapse_reg`` (T-JEPA's regularisation tokens, generic form).

    T-JEPA appends learnable [REG] tokens to a token encoder so its embeddings do not collapse; geot's
    backbones are not token models, so the goal is written as VICReg's variance hinge (std >= 1 per
    channel) plus ``covariance`` (0.04 = VICReg's 1/25 ratio) x the off-diagonal covariance, on up to
    ``sample`` point features of the step. Weight 0.1; none of these numbers is from T-JEPA.
    """

    name = "collapse_reg"

    def __init__(self, weight: float = 0.1, schedule=None, target_std: float = 1.0, covariance: float = 0.04,
                 sample: int = 1024) -> None:
        super().__init__(weight, schedule)
        self.target_std, self.covariance, self.sample = target_std, covariance, sample

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        parts = [f for f in (ctx.feats_lab, ctx.feats) if f is not None]
        if not parts or sum(len(f) for f in parts) < 2:
            return zero_loss(ctx), {}
        feats = torch.cat(parts)
        feats = feats[random_perm(len(feats), feats.device)[: self.sample]]
        variance, covariance = variance_covariance(feats, self.target_std)
        return variance + self.covariance * covariance, {"variance": variance.item()}
