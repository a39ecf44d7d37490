"""OVOR: virtual outlier regularisation (Huang et al., "OVOR: OnePrompt with virtual outlier regularization
for rehearsal-free class-incremental learning", ICLR 2024).

Virtual outliers synthesised just outside the labelled features teach the head low confidence (high
energy E = -logsumexp z) off the data, while the labelled points keep low energy. The energy per point is
also an explainer (``geot.modules.explainers.ovor``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from geot.labels import NUM_CLASSES
from geot.modules import LossTerm, StepContext, register
from geot.modules.common import normalise, randn, sample_balanced, zero_loss


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
    """Energy margin between labelled features and virtual outliers, trained on the head only.

    Weight lambda = 0.1, theta_id = -15, theta_ood = -3, K = 50, 50 boundary points, sigma = 0.1, 40
    outliers per class kept (OVOR's configs). ID features (a class-balanced draw of ``id_points`` labelled
    features) and outliers are detached. OVOR runs the term only in its last 10 of 50 epochs: give it
    ``schedule: {start: ...}``. OVOR draws 600 offsets per boundary point once per task; per step here, 50.
    Its energy thresholds assume its head's logit scale; lower them if the head's logsumexp stays small.
    """

    name = "ovor"

    def __init__(self, weight: float = 0.1, schedule=None, theta_id: float = -15.0, theta_ood: float = -3.0,
                 k: int = 50, select: int = 50, samples: int = 50, sigma: float = 0.1, per_class: int = 40,
                 id_points: int = 512, num_classes: int = NUM_CLASSES) -> None:
        super().__init__(weight, schedule)
        self.theta_id, self.theta_ood, self.k, self.select = theta_id, theta_ood, k, select
        self.samples, self.sigma, self.keep, self.id_points = samples, sigma, per_class * num_classes, id_points

    def forward(self, ctx: StepContext) -> tuple[Tensor, dict[str, float]]:
        if ctx.head is None or ctx.lab is None or len(ctx.lab.feats) < 3:
            return zero_loss(ctx), {}
        chosen = sample_balanced(ctx.lab.labels, self.id_points)
        feats = ctx.lab.feats[chosen].detach()
        with torch.no_grad():
            outliers, _, _ = virtual_outliers(feats, self.k, self.select, self.samples, self.sigma, self.keep)
        e_id, e_ood = energy(ctx.head(feats)), energy(ctx.head(outliers))
        loss = energy_margin_loss(e_id, e_ood, self.theta_id, self.theta_ood)
        return loss, {"energy_id": e_id.mean().item(), "energy_ood": e_ood.mean().item()}
