"""Atypical points: energy-based outlier training and per-point anomaly maps.

* ``ovor`` (OVOR, Huang et al. 2024): virtual outliers synthesised just outside the labelled features
  teach the head low confidence (high energy E = -logsumexp z) off the data; ID points get low energy.
* ``energy`` explainer: E per point, the open-set score that term trains.
* ``dictas`` explainer and ``dictas_filter`` target transform (DictAS, Wei et al. 2025): a point whose
  feature cannot be rebuilt by a sparse (sparsemax) lookup in a dictionary of clean features of its class is
  anomalous: 1 - (cos(q, retrieved) + 1) / 2, 0 for a dictionary entry, 0.5 for an orthogonal feature.
* ``resad`` explainer (ResAD++, residual features): distance of a point's feature to its nearest reference
  feature of the same class.

The explainers run on one scan without training state: the dictionary/reference is the scan's own
confident points (each point excluded from its own lookup), or a fixed pool set with ``set_reference``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geot.addons.base import Explainer, LossTerm, StepContext, TargetTransform, register
from geot.addons.common import normalise, pseudo_labels, randn, sample_balanced, zero_loss


def energy(logits: Tensor) -> Tensor:
    """E(x) = -logsumexp_c z_c: low on familiar inputs, high on outliers."""
    return -torch.logsumexp(logits, dim=-1)


def kth_neighbour_distance(x: Tensor, reference: Tensor, k: int, exclude_self: bool = False) -> Tensor:
    """Distance from each row of ``x`` to its k-th nearest row of ``reference``."""
    d = torch.cdist(x, reference)
    if exclude_self:
        d.fill_diagonal_(float("inf"))
    k = min(k, reference.shape[0] - int(exclude_self))
    return d.topk(k, dim=1, largest=False).values[:, -1]


def virtual_outliers(feats: Tensor, k: int = 50, select: int = 50, samples: int = 50, sigma: float = 0.1,
                     keep: int = 680) -> tuple[Tensor, Tensor, Tensor]:
    """OVOR's generator on unit-normalised features: the ``select`` boundary points (largest k-th-NN
    distance), ``samples`` Gaussian offsets v = f_b + sigma eps around each (the paper's form; the official
    code forgets to add f_b), keeping the ``keep`` candidates farthest from the data (k-th-NN distance).

    Returns the outliers rescaled to their boundary point's norm (the head's input scale), and, on the unit
    sphere, the outliers' and the boundary points' k-th-NN distances.
    """
    unit = normalise(feats)
    kth = kth_neighbour_distance(unit, unit, k, exclude_self=True)
    boundary = kth.topk(min(select, len(unit))).indices
    source = boundary.repeat_interleave(samples)
    candidates = unit[source] + sigma * randn(len(source), unit.shape[1], like=unit)
    distance = kth_neighbour_distance(candidates, unit, k)
    chosen = distance.topk(min(keep, len(candidates))).indices
    outliers = candidates[chosen] * feats[source[chosen]].norm(dim=1, keepdim=True)
    return outliers, distance[chosen], kth[boundary]


def energy_margin_loss(e_id: Tensor, e_ood: Tensor, theta_id: float = -15.0, theta_ood: float = -3.0) -> Tensor:
    """Huber(relu(E_id - theta_id)) + Huber(relu(theta_ood - E_ood)), each averaged."""
    def huber(x: Tensor) -> Tensor:
        return F.smooth_l1_loss(x, torch.zeros_like(x))
    return huber(F.relu(e_id - theta_id)) + huber(F.relu(theta_ood - e_ood))


@register
class VirtualOutlierEnergyReg(LossTerm):
    """Loss ``ovor``: weight lambda = 0.1, theta_id = -15, theta_ood = -3, K = 50, 50 boundary points,
    sigma = 0.1, 40 outliers per class kept (OVOR's configs).

    Head only: ID features (a class-balanced draw of ``id_points`` labelled features) and outliers are
    detached. OVOR runs the term only in its last 10 of 50 epochs: give it ``schedule: {start: ...}``.
    OVOR draws 600 offsets per boundary point once per task; per step here, 50. Its energy thresholds
    assume its head's logit scale; lower them if the head's logsumexp stays small.
    """

    name = "ovor"

    def __init__(self, weight: float = 0.1, schedule=None, theta_id: float = -15.0, theta_ood: float = -3.0,
                 k: int = 50, select: int = 50, samples: int = 50, sigma: float = 0.1, per_class: int = 40,
                 id_points: int = 512, num_classes: int = 17) -> None:
        super().__init__(weight, schedule)
        self.theta_id, self.theta_ood, self.k, self.select = theta_id, theta_ood, k, select
        self.samples, self.sigma, self.keep, self.id_points = samples, sigma, per_class * num_classes, id_points

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        if ctx.head is None or ctx.feats_lab is None or len(ctx.feats_lab) < 3:
            return zero_loss(ctx), {}
        chosen = sample_balanced(ctx.labels, self.id_points)
        feats = ctx.feats_lab[chosen].detach()
        with torch.no_grad():
            outliers, _, _ = virtual_outliers(feats, self.k, self.select, self.samples, self.sigma, self.keep)
        e_id, e_ood = energy(ctx.head(feats)), energy(ctx.head(outliers))
        loss = energy_margin_loss(e_id, e_ood, self.theta_id, self.theta_ood)
        return loss, {"energy_id": e_id.mean().item(), "energy_ood": e_ood.mean().item()}


@register
class EnergyExplainer(Explainer):
    """Explainer ``energy``: -logsumexp of the logits per point (higher = less like the training data)."""

    name = "energy"

    @torch.no_grad()
    def forward(self, model: nn.Module, x: Tensor, pos: Tensor, batch: Tensor) -> dict[str, Tensor]:
        return {"energy": energy(model(x, pos, batch).logits)}


def sparsemax(z: Tensor, dim: int = -1) -> Tensor:
    """Euclidean projection of ``z`` onto the simplex (Martins & Astudillo 2016): sparse, sums to 1."""
    z = z.transpose(dim, -1)
    sorted_z, _ = z.sort(dim=-1, descending=True)
    cumsum = sorted_z.cumsum(-1)
    k = torch.arange(1, z.shape[-1] + 1, device=z.device, dtype=z.dtype)
    support = 1 + k * sorted_z > cumsum
    k_z = support.sum(-1, keepdim=True)
    tau = (cumsum.gather(-1, k_z - 1) - 1) / k_z.to(z.dtype)
    return (z - tau).clamp(min=0).transpose(dim, -1)


def dictionary_lookup_score(queries: Tensor, keys: Tensor, temperature: float = 0.05,
                            exclude: Tensor | None = None) -> Tensor:
    """1 - (cos(q, A K) + 1) / 2 with A = sparsemax(cos(q, K) / temperature); identity Q/K/V projections
    on normalised features. ``exclude`` (Q, K) bool marks entries a query may not use (itself)."""
    q, k = normalise(queries), normalise(keys)
    logits = q @ k.T / temperature
    if exclude is not None:
        logits = logits.masked_fill(exclude, -1e4)
    retrieved = sparsemax(logits) @ k
    return 1 - (F.cosine_similarity(q, retrieved, dim=-1) + 1) / 2


def per_class(score_fn, queries: Tensor, query_cls: Tensor, refs: Tensor, ref_cls: Tensor,
              query_ids: Tensor | None = None, ref_ids: Tensor | None = None) -> Tensor:
    """Apply ``score_fn(q, r, exclude)`` class by class (a class without 2 references uses them all);
    ``*_ids`` identify the same point on both sides, which may not look itself up."""
    out = torch.zeros(len(queries), dtype=queries.dtype, device=queries.device)
    for c in query_cls.unique():
        qm = query_cls == c
        rm = ref_cls == c
        if int(rm.sum()) < 2:
            rm = torch.ones_like(ref_cls, dtype=torch.bool)
        exclude = None
        if query_ids is not None and ref_ids is not None:
            exclude = query_ids[qm][:, None] == ref_ids[rm][None, :]
        out[qm] = score_fn(queries[qm], refs[rm], exclude)
    return out


class _ReferenceExplainer(Explainer):
    """Explainer with an optional fixed reference pool; else the scan's confident points are the pool."""

    def __init__(self, weight: float = 1.0, schedule=None, confidence: float = 0.9, pool: int = 2048) -> None:
        super().__init__(weight, schedule)
        self.confidence, self.pool = confidence, pool
        self.register_buffer("ref_feats", torch.zeros(0, 0))
        self.register_buffer("ref_labels", torch.zeros(0, dtype=torch.long))

    def set_reference(self, feats: Tensor, labels: Tensor) -> None:
        """A fixed pool of clean features (e.g. of labelled scans) and their classes."""
        self.ref_feats, self.ref_labels = feats.detach().float(), labels.long()

    def score(self, queries: Tensor, refs: Tensor, exclude: Tensor | None) -> Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, model: nn.Module, x: Tensor, pos: Tensor, batch: Tensor) -> dict[str, Tensor]:
        out = model(x, pos, batch)
        logits, feats = out.logits, out.feats
        probs = torch.softmax(logits, dim=1)
        conf, predicted = probs.max(dim=1)
        if len(self.ref_feats):
            refs, ref_cls = self.ref_feats.to(feats), self.ref_labels.to(feats.device)
            return {self.name: per_class(self.score, feats, predicted, refs, ref_cls)}
        ids = (conf >= self.confidence).nonzero().squeeze(1)
        if len(ids) < 2:
            ids = torch.arange(len(feats), device=feats.device)
        ids = ids[torch.randperm(len(ids)).to(ids.device)[: self.pool]]
        scores = per_class(self.score, feats, predicted, feats[ids], predicted[ids],
                           torch.arange(len(feats), device=feats.device), ids)
        return {self.name: scores}


@register
class DictionaryLookupAnomaly(_ReferenceExplainer):
    """Explainer ``dictas``: sparse dictionary-lookup anomaly score per point (0 typical .. 1 anomalous).

    Simplified: identity query/key/value projections instead of DictAS's trained generators, so cosine
    logits over ``temperature`` = 0.05 replace QK^T / sqrt(d); one scale, no pooling pyramid.
    """

    name = "dictas"

    def __init__(self, weight: float = 1.0, schedule=None, confidence: float = 0.9, pool: int = 2048,
                 temperature: float = 0.05) -> None:
        super().__init__(weight, schedule, confidence, pool)
        self.temperature = temperature

    def score(self, queries: Tensor, refs: Tensor, exclude: Tensor | None) -> Tensor:
        return dictionary_lookup_score(queries, refs, self.temperature, exclude)


def residual_distance(queries: Tensor, refs: Tensor, exclude: Tensor | None = None) -> Tensor:
    """||f - NN(f)|| to the nearest reference row (rows marked in ``exclude`` do not count)."""
    d = torch.cdist(queries, refs, compute_mode="donot_use_mm_for_euclid_dist")  # exact zeros
    if exclude is not None:
        d = d.masked_fill(exclude, float("inf"))
    return d.min(dim=1).values


@register
class ResidualFeatureAnomaly(_ReferenceExplainer):
    """Explainer ``resad``: ||f_i - NN_{ref, class y^_i}(f_i)||, the residual to the nearest reference
    feature of the predicted class (ResAD's residual, without its hypersphere training or VQ matching)."""

    name = "resad"

    def score(self, queries: Tensor, refs: Tensor, exclude: Tensor | None) -> Tensor:
        return residual_distance(queries, refs, exclude)


@register
class DictionaryAnomalyFilter(TargetTransform):
    """Target transform ``dictas_filter``: pseudo labels of points whose (teacher) feature scores above
    ``kappa`` against a dictionary of labelled features of the pseudo-labelled class get weight 0.

    kappa = 0.35 (retrieved cosine below 0.3) and the dictionary size are not verified.
    """

    name = "dictas_filter"

    def __init__(self, weight: float = 1.0, schedule=None, kappa: float = 0.35, dictionary: int = 1024,
                 temperature: float = 0.05) -> None:
        super().__init__(weight, schedule)
        self.kappa, self.dictionary, self.temperature = kappa, dictionary, temperature

    def forward(self, ctx: StepContext, targets: Tensor) -> Tensor:
        feats = ctx.feats_teacher if ctx.feats_teacher is not None else ctx.feats
        if feats is None or ctx.feats_lab is None or len(ctx.feats_lab) < 2:
            return targets
        chosen = sample_balanced(ctx.labels, self.dictionary)
        teacher, _ = pseudo_labels(ctx)

        def score(q: Tensor, r: Tensor, exclude: Tensor | None) -> Tensor:
            return dictionary_lookup_score(q, r, self.temperature, exclude)

        scores = per_class(score, feats.detach(), teacher, ctx.feats_lab[chosen].detach(), ctx.labels[chosen])
        ctx.weigh((scores <= self.kappa).float())
        return targets
