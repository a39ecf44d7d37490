"""Happy (Ma et al., "Happy: a debiased learning framework for continual generalized category discovery",
NeurIPS 2024): hardness-aware prototype replay and group-wise entropy.

* ``happy_replay``: the head learns from features sampled around class prototypes (running class means),
  classes drawn more often the closer their prototype lies to the others (confusable teeth).
* ``group_entropy``: the batch's mean prediction must match the labelled class prior between class groups
  and within each group.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from geot.labels import NUM_CLASSES
from geot.modules import LossTerm, StepContext, register
from geot.modules.common import class_groups, kl, normalise, randn, zero_loss
from geot.modules.state import ClassMeans


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
    """Cross-entropy of the head on features sampled around class prototypes, confusable classes first.

    CE(head(mu_c + r eps), c), c ~ softmax(s_c / 0.1), weight 1 (Happy's code). Prototypes and the radius
    are running (EMA 0.9 per step) statistics of the labelled points' features. The head here is not a cosine
    head, so the prototypes are the raw class means (Happy normalises them and divides logits by 0.1);
    gradients reach only the head.
    """

    name = "happy_replay"

    def __init__(self, weight: float = 1.0, schedule=None, temperature: float = 0.1, samples: int = 64,
                 momentum: float = 0.9, num_classes: int = NUM_CLASSES) -> None:
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
        if ctx.lab is not None:
            self.stats.update(ctx.lab.feats, ctx.lab.labels)
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
    """The unlabelled points' mean posterior must match the labelled class prior, by class group.

    Between groups (weight 2) and within each group (weight 1), Happy's w_on and w_g. ``groups``: ``type``
    (gingiva / incisors+canines / premolars / molars), ``side`` or ``none``. The prior counts the labelled
    points seen so far (add-one smoothed). Prior matching replaces Happy's uniform targets, which would push
    mass away from gingiva.
    """

    name = "group_entropy"
    on_unlabelled = True

    def __init__(self, weight: float = 1.0, schedule=None, groups: str = "type", between: float = 2.0,
                 within: float = 1.0, num_classes: int = NUM_CLASSES) -> None:
        super().__init__(weight, schedule)
        self.groups, self.between, self.within = class_groups(groups), between, within
        self.register_buffer("counts", torch.zeros(num_classes))

    def prior(self) -> Tensor:
        return (self.counts + 1) / (self.counts.sum() + len(self.counts))

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        if ctx.lab is not None and len(ctx.lab.labels):
            self.counts += torch.bincount(ctx.lab.labels, minlength=len(self.counts)).to(self.counts)
        if ctx.unl is None:
            return zero_loss(ctx), {}
        pbar = torch.softmax(ctx.unl.logits, dim=1).mean(0)
        return group_prior_match(pbar, self.prior().to(pbar), self.groups, self.between, self.within), {}
