"""Terms built on class prototypes (running class means of point features) and class statistics.

* ``happy_replay`` (Happy, Ma et al. 2024): the head learns from features sampled around class prototypes,
  classes drawn more often the closer their prototype lies to the others (confusable teeth).
* ``group_entropy`` (Happy's group-wise entropy, prior-matched): the batch's mean prediction must match the
  labelled class prior between class groups and within each group.
* ``rcal`` (RCAL, Zhang et al. 2023): per-class Gaussians of features with outliers removed (LOF), tail
  classes borrowing covariance from arch neighbours; the head learns from samples of them; features are
  held near the frozen anchor's.
* ``disa`` (DiSa): 1 - cos between each point's feature and its class prototype.
* ``lbl2vec`` (Lbl2TransformerVec, target transform): a second, head-free labeller (prototypes refined on
  each scan's most similar points); pseudo labels it contradicts get weight 0.

``prototype_head_init`` is CoACT's head initialisation from class means (a one-off function).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geot.addons.base import LossTerm, StepContext, TargetTransform, register
from geot.addons.common import (
    ClassMeans,
    ResizableState,
    class_groups,
    kl,
    labelled_and_confident,
    normalise,
    pseudo_labels,
    randn,
    zero_loss,
)
from geot.addons.metric import tooth_metric


@torch.no_grad()
def prototype_head_init(linear: nn.Linear, feats: Tensor, labels: Tensor) -> None:
    """Set each class's weight row to its normalised mean input feature (bias 0): a cosine-like head whose
    argmax on each class mean is that class. Classes without points keep their rows."""
    for c in labels.unique():
        linear.weight[c] = normalise(feats[labels == c].mean(0)).to(linear.weight)
    if linear.bias is not None:
        linear.bias.zero_()


def hardness_probabilities(prototypes: Tensor, temperature: float = 0.1) -> Tensor:
    """softmax(s_c / tau) with s_c the mean cosine similarity of prototype c to the other prototypes."""
    unit = normalise(prototypes)
    sims = unit @ unit.T
    n = len(prototypes)
    mean_other = (sims.sum(1) - sims.diagonal()) / max(n - 1, 1)
    return torch.softmax(mean_other / temperature, dim=0)


class _ClassMoments(ClassMeans):
    """Class means plus running mean squares (for a per-class variance)."""

    def __init__(self, num_classes: int, momentum: float) -> None:
        super().__init__(num_classes, momentum)
        self.squares = ClassMeans(num_classes, momentum)

    def update(self, feats: Tensor, labels: Tensor) -> None:
        super().update(feats, labels)
        if feats is not None and len(feats):
            self.squares.update(feats.detach() ** 2, labels)

    def radius(self) -> Tensor:
        """r = sqrt(mean_c tr(Sigma_c) / d) over the classes seen (diagonal variances)."""
        var = (self.squares.means[self.seen] - self.means[self.seen] ** 2).clamp(min=0)
        return var.mean().sqrt()


@register
class HardnessAwareProtoReplay(LossTerm):
    """Loss ``happy_replay``: CE(head(mu_c + r eps), c), c ~ softmax(s_c / 0.1), weight 1 (Happy's code).

    Prototypes and the radius are running (EMA 0.9 per step) statistics of the labelled points' features.
    The head here is not a cosine head, so the prototypes are the raw class means (Happy normalises them
    and divides logits by 0.1); gradients reach only the head.
    """

    name = "happy_replay"

    def __init__(self, weight: float = 1.0, schedule=None, temperature: float = 0.1, samples: int = 64,
                 momentum: float = 0.9, num_classes: int = 17) -> None:
        super().__init__(weight, schedule)
        self.temperature, self.samples = temperature, samples
        self.stats = _ClassMoments(num_classes, momentum)

    def replay(self, radius: float | Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Sampled features and their classes."""
        classes = self.stats.seen.nonzero().squeeze(1)
        prototypes = self.stats.means[classes]
        probs = hardness_probabilities(prototypes, self.temperature)
        draw = torch.multinomial(probs.cpu(), self.samples, replacement=True).to(classes.device)
        r = self.stats.radius() if radius is None else radius
        feats = prototypes[draw] + r * randn(self.samples, prototypes.shape[1], like=prototypes)
        return feats, classes[draw]

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        self.stats.update(ctx.feats_lab, ctx.labels)
        if ctx.head is None or int(self.stats.seen.sum()) < 2:
            return zero_loss(ctx), {}
        feats, classes = self.replay()
        loss = F.cross_entropy(ctx.head(feats), classes)
        return loss, {"radius": float(self.stats.radius())}


def group_prior_match(pbar: Tensor, prior: Tensor, groups: list[list[int]], between: float = 2.0,
                      within: float = 1.0) -> Tensor:
    """w_b KL(m || pi_G) + sum_g w_g KL(pbar_g / m_g || pi_g / pi_G,g), m_g the mass of group g.

    With a uniform prior this is Happy's w_b (sum_g m_g log m_g + log G) + sum_g w_g (log|g| - H(pbar_g/m_g)).
    """
    mass = torch.stack([pbar[g].sum() for g in groups])
    prior_mass = torch.stack([prior[g].sum() for g in groups])
    loss = between * kl(mass, prior_mass)
    for i, g in enumerate(groups):
        if len(g) > 1:
            loss = loss + within * kl(pbar[g] / mass[i].clamp(min=1e-12), prior[g] / prior_mass[i])
    return loss


@register
class GroupMarginalEntropy(LossTerm):
    """Loss ``group_entropy``: the unlabelled points' mean posterior must match the labelled class prior
    between groups (weight 2) and within each group (weight 1), Happy's w_on and w_g.

    ``groups``: ``type`` (gingiva / incisors+canines / premolars / molars), ``side`` or ``none``. The prior
    counts the labelled points seen so far (add-one smoothed). Prior matching replaces Happy's uniform
    targets, which would push mass away from gingiva.
    """

    name = "group_entropy"
    on_unlabelled = True

    def __init__(self, weight: float = 1.0, schedule=None, groups: str = "type", between: float = 2.0,
                 within: float = 1.0, num_classes: int = 17) -> None:
        super().__init__(weight, schedule)
        self.groups, self.between, self.within = class_groups(groups), between, within
        self.register_buffer("counts", torch.zeros(num_classes))

    def prior(self) -> Tensor:
        return (self.counts + 1) / (self.counts.sum() + len(self.counts))

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        if ctx.labels is not None and len(ctx.labels):
            self.counts += torch.bincount(ctx.labels, minlength=len(self.counts)).to(self.counts)
        if ctx.logits is None:
            return zero_loss(ctx), {}
        pbar = torch.softmax(ctx.logits, dim=1).mean(0)
        return group_prior_match(pbar, self.prior().to(pbar), self.groups, self.between, self.within), {}


def lof_scores(x: Tensor, k: int = 10) -> Tensor:
    """Local outlier factor of each row of ``x`` (about 1 inside a cluster, larger for outliers)."""
    k = min(k, len(x) - 1)
    d = torch.cdist(x, x)
    d.fill_diagonal_(float("inf"))
    knn_d, knn_i = d.topk(k, dim=1, largest=False)
    k_distance = knn_d[:, -1]
    reach = torch.maximum(knn_d, k_distance[knn_i])
    lrd = 1.0 / reach.mean(1).clamp(min=1e-12)
    return lrd[knn_i].mean(1) / lrd


def robust_stats(x: Tensor, k: int = 10, outlier_fraction: float = 0.1,
                 shrinkage: float = 0.1) -> tuple[Tensor, Tensor]:
    """Mean and covariance after dropping the ``outlier_fraction`` of rows with the largest LOF; the
    covariance shrinks towards tr(S)/d I by ``shrinkage`` (so it is well conditioned for few samples)."""
    if len(x) > k + 1 and outlier_fraction > 0:
        keep = lof_scores(x, k).argsort()[: max(2, int(round(len(x) * (1 - outlier_fraction))))]
        x = x[keep]
    mean = x.mean(0)
    centred = x - mean
    cov = centred.T @ centred / max(len(x) - 1, 1)
    eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    return mean, (1 - shrinkage) * cov + shrinkage * cov.diagonal().mean() * eye


def calibrate(covs: Tensor, valid: Tensor, tail: Tensor, metric: Tensor, donors: int = 2) -> Tensor:
    """Tail classes average their covariance with their ``donors`` nearest valid classes under the tooth
    metric: Sigma~_c = (Sigma_c + sum_j Sigma_j) / (1 + q). Other classes, and q = 0, keep their own."""
    out = covs.clone()
    if donors <= 0:
        return out
    for c in (tail & valid).nonzero().squeeze(1).tolist():
        distance = metric[c].clone()
        distance[c] = float("inf")
        distance[~valid] = float("inf")
        near = distance.argsort()[:donors]
        near = near[torch.isfinite(distance[near])]
        out[c] = (covs[c] + covs[near].sum(0)) / (1 + len(near))
    return out


@register
class RepresentationCalibration(ResizableState, LossTerm):
    """Loss ``rcal``: CE of the head on features sampled from calibrated class Gaussians, plus
    ``individual`` * mean ||f - f_anchor||^2 (RCAL's individual calibration; the anchor stands in for the
    self-supervised features). Uses the anchor only when ``individual`` > 0.

    Statistics come from a per-class ring buffer (``bank`` features) of labelled and confident points,
    refreshed at each epoch's end: LOF (20 neighbours, scikit-learn's default) drops 10% outliers,
    covariance shrinkage 0.1, tail classes (count below ``tail_fraction`` x the median class count) borrow
    covariance from their 2 nearest classes on the arch. The mixing weights, q and the sample counts are
    not verified (RCAL's code was not available); means are not mixed, since neighbouring teeth sit at
    different places in feature space.
    """

    name = "rcal"

    def __init__(self, weight: float = 1.0, schedule=None, threshold: float = 0.9, bank: int = 256,
                 samples: int = 8, donors: int = 2, tail_fraction: float = 0.5, outlier_fraction: float = 0.1,
                 lof_k: int = 20, shrinkage: float = 0.1, individual: float = 1.0, num_classes: int = 17) -> None:
        super().__init__(weight, schedule)
        self.threshold, self.bank_size, self.samples, self.donors = threshold, bank, samples, donors
        self.tail_fraction, self.outlier_fraction, self.lof_k = tail_fraction, outlier_fraction, lof_k
        self.shrinkage, self.individual, self.num_classes = shrinkage, individual, num_classes
        self.needs_anchor = individual > 0
        self.register_buffer("bank", torch.zeros(num_classes, bank, 0))
        self.register_buffer("filled", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer("counts", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer("mean", torch.zeros(num_classes, 0))
        self.register_buffer("chol", torch.zeros(num_classes, 0, 0))
        self.register_buffer("ready", torch.zeros(num_classes, dtype=torch.bool))
        self.register_buffer("metric", torch.as_tensor(tooth_metric(), dtype=torch.float32))

    @torch.no_grad()
    def collect(self, feats: Tensor, labels: Tensor) -> None:
        feats = feats.detach().float()
        if self.bank.shape[2] != feats.shape[1]:
            self.bank = torch.zeros(self.num_classes, self.bank_size, feats.shape[1], device=feats.device)
        for c in labels.unique().tolist():
            new = feats[labels == c][-self.bank_size:]
            slots = (self.filled[c] + torch.arange(len(new), device=feats.device)) % self.bank_size
            self.bank[c, slots] = new
            self.filled[c] += len(new)
            self.counts[c] += int((labels == c).sum())

    def on_epoch_end(self, epoch: int) -> None:
        dim = self.bank.shape[2]
        valid = self.filled.clamp(max=self.bank_size) > self.lof_k + 1
        if dim == 0 or not valid.any():
            return
        means = torch.zeros(self.num_classes, dim, device=self.bank.device)
        covs = torch.zeros(self.num_classes, dim, dim, device=self.bank.device)
        for c in valid.nonzero().squeeze(1).tolist():
            x = self.bank[c, : int(self.filled[c].clamp(max=self.bank_size))]
            means[c], covs[c] = robust_stats(x, self.lof_k, self.outlier_fraction, self.shrinkage)
        median = self.counts[valid].float().median()
        tail = self.counts.float() < self.tail_fraction * median
        covs = calibrate(covs, valid, tail, self.metric.to(covs.device), self.donors)
        eye = torch.eye(dim, device=covs.device)
        self.mean, self.ready = means, valid
        self.chol = torch.linalg.cholesky(covs + 1e-5 * eye) * valid[:, None, None]
        self.counts.zero_()

    def sample(self) -> tuple[Tensor, Tensor]:
        classes = self.ready.nonzero().squeeze(1).repeat_interleave(self.samples)
        eps = randn(len(classes), self.mean.shape[1], like=self.mean)
        return self.mean[classes] + torch.einsum("nij,nj->ni", self.chol[classes], eps), classes

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        feats, labels = labelled_and_confident(ctx, self.threshold)
        if feats is not None:
            self.collect(feats, labels)
        loss, logs = zero_loss(ctx), {}
        if ctx.head is not None and self.ready.any():
            sampled, classes = self.sample()
            replay = F.cross_entropy(ctx.head(sampled), classes)
            loss, logs["replay"] = loss + replay, replay.item()
        if self.individual > 0:
            pairs = [(ctx.feats, ctx.feats_anchor), (ctx.feats_lab, ctx.feats_anchor_lab)]
            gaps = [((f - a.detach()) ** 2).mean(1) for f, a in pairs if f is not None and a is not None]
            if gaps:
                drift = torch.cat(gaps).mean()
                loss, logs["drift"] = loss + self.individual * drift, drift.item()
        return loss, logs


def direction_loss(feats: Tensor, prototypes: Tensor) -> Tensor:
    """Per point 1 - cos(f_i, mu_{y_i}) for rows of matching prototypes (no gradient into them)."""
    return 1 - F.cosine_similarity(feats, prototypes.detach(), dim=-1)


@register
class DirectionalPrototypeReg(LossTerm):
    """Loss ``disa``: mean (1 - cos(f_i, mu_{y_i})) over labelled and confident unlabelled points.

    mu_c: EMA (0.9 per step) of the class means of the labelled points' features, from the frozen anchor
    with ``use_anchor`` (as DiSa uses the frozen model), else from the student (detached). lambda (the
    weight) is not verified; 1.0 here.
    """

    name = "disa"

    def __init__(self, weight: float = 1.0, schedule=None, threshold: float = 0.7, momentum: float = 0.9,
                 use_anchor: bool = False, num_classes: int = 17) -> None:
        super().__init__(weight, schedule)
        self.threshold, self.needs_anchor = threshold, use_anchor
        self.prototypes = ClassMeans(num_classes, momentum)

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        source = ctx.feats_anchor_lab if self.needs_anchor and ctx.feats_anchor_lab is not None else ctx.feats_lab
        if source is not None and ctx.labels is not None:
            self.prototypes.update(source, ctx.labels)
        feats, labels = labelled_and_confident(ctx, self.threshold)
        if feats is None or self.prototypes.means.shape[1] != feats.shape[1]:
            return zero_loss(ctx), {}
        keep = self.prototypes.seen[labels]
        if not keep.any():
            return zero_loss(ctx), {}
        return direction_loss(feats[keep], self.prototypes.means[labels[keep]]).mean(), {}


def refine_prototypes(emb: Tensor, seeds: Tensor, top_m: int) -> Tensor:
    """Each seed (unit vector) becomes the normalised centroid of itself and its ``top_m`` most similar
    rows of ``emb``."""
    m = min(top_m, len(emb))
    top = (emb @ seeds.T).topk(m, dim=0).indices  # (m, S)
    return normalise(emb[top].sum(0) + seeds)


def prototype_labels(emb: Tensor, prototypes: Tensor) -> Tensor:
    """Index of the most similar prototype per row."""
    return (emb @ prototypes.T).argmax(dim=1)


@register
class PrototypeSimilarityLabeler(TargetTransform):
    """Target transform ``lbl2vec``: drop (weight 0) the pseudo labels a prototype labeller contradicts.

    Seeds: normalised running class means of the labelled points' features. Per scan, each seed is refined
    into the centroid of its ``top_m`` = 50 most similar points of that scan (teacher features of the weak
    view), and points take the label of the nearest refined prototype. A pseudo label stays when the two
    labels lie at most ``max_distance`` = 1 apart under the tooth metric (an arch or mirror neighbour), or
    when its class has no seed yet. Targets are returned unchanged; top_m is not verified.
    """

    name = "lbl2vec"

    def __init__(self, weight: float = 1.0, schedule=None, top_m: int = 50, max_distance: float = 1.0,
                 momentum: float = 0.9, num_classes: int = 17) -> None:
        super().__init__(weight, schedule)
        self.top_m, self.max_distance = top_m, max_distance
        self.seeds = ClassMeans(num_classes, momentum)
        self.register_buffer("metric", torch.as_tensor(tooth_metric(), dtype=torch.float32))

    def agreement(self, emb: Tensor, teacher: Tensor, batch: Tensor) -> Tensor:
        classes = self.seeds.seen.nonzero().squeeze(1)
        seeds = normalise(self.seeds.means[classes]).to(emb)
        proto = torch.empty_like(teacher)
        for b in batch.unique():
            members = batch == b
            refined = refine_prototypes(emb[members], seeds, self.top_m)
            proto[members] = classes[prototype_labels(emb[members], refined)]
        metric = self.metric.to(emb.device)
        return (metric[teacher, proto] <= self.max_distance) | ~self.seeds.seen[teacher]

    def forward(self, ctx: StepContext, targets: Tensor) -> Tensor:
        if ctx.feats_lab is not None and ctx.labels is not None:
            self.seeds.update(ctx.feats_lab, ctx.labels)
        feats = ctx.feats_teacher if ctx.feats_teacher is not None else ctx.feats
        if feats is None or not self.seeds.seen.any() or self.seeds.means.shape[1] != feats.shape[1]:
            return targets
        teacher, _ = pseudo_labels(ctx)
        batch = ctx.batch if ctx.batch is not None else torch.zeros_like(teacher)
        ctx.weigh(self.agreement(normalise(feats.detach()), teacher, batch).float())
        return targets
