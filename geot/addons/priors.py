"""Per-scan label-shift correction (after latent label shift / DDFA, Roberts et al. 2022).

Every scan is its own domain: tooth appearance p(x|y) is shared, but the class prior p_d(y) differs with
missing, extracted or unerupted teeth. EM (Saerens et al. 2002) estimates the scan's prior pi_d from the
posteriors of its points, w_ic ∝ p_ic pi_dc / pi_c and pi_d <- mean_i w_i, and the posterior is adjusted
to p_d(y|x) ∝ p(y|x) pi_d(y) / pi(y); classes whose pi_dc falls below ``absent`` are removed (absent
teeth). pi is the prior the model learnt (labelled point frequencies). The full DDFA (domain
discriminator, clustering, NMF) is not needed because the classes are known.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from geot.addons.base import PredictionRule, StepContext, TargetTransform, register
from geot.addons.loki import frechet_mean
from geot.addons.metric import tooth_metric


def em_prior(probs: Tensor, train_prior: Tensor, iters: int = 100, tol: float = 1e-7) -> Tensor:
    """The prior of the domain that produced ``probs`` (V, C), given the prior the model learnt."""
    ratio_base = train_prior.clamp(min=1e-12)
    prior = train_prior / train_prior.sum()
    for _ in range(iters):
        w = probs * (prior / ratio_base)
        w = w / w.sum(dim=1, keepdim=True).clamp(min=1e-12)
        new = w.mean(dim=0)
        done = (new - prior).abs().max() < tol
        prior = new
        if done:
            break
    return prior


def adjust_posterior(probs: Tensor, train_prior: Tensor, scan_prior: Tensor, absent: float = 1e-3) -> Tensor:
    """p(y|x) pi_d(y) / pi(y), renormalised, with classes below ``absent`` in pi_d set to 0 (a point left
    with no class keeps its posterior)."""
    ratio = scan_prior / train_prior.clamp(min=1e-12)
    ratio = torch.where(scan_prior < absent, torch.zeros_like(ratio), ratio)
    out = probs * ratio
    total = out.sum(dim=1, keepdim=True)
    return torch.where(total > 0, out / total.clamp(min=1e-30), probs)


def reference_prior(probs: Tensor, floor: float = 0.5) -> Tensor:
    """A stand-in for the learnt prior when none is known: the scan's mean posterior with every tooth class
    raised to at least ``floor`` x the median tooth mass. Classes the scan shows are left as they are (no
    shift), while a tooth the scan seems to lack is measured against a typical tooth's mass."""
    mean = probs.mean(dim=0)
    teeth = mean[1:]
    return torch.cat([mean[:1], teeth.clamp(min=floor * float(teeth.median()))])


def correct_scan(probs: Tensor, train_prior: Tensor | None, iters: int = 100, absent: float = 1e-3,
                 floor: float = 0.5) -> Tensor:
    prior = reference_prior(probs, floor) if train_prior is None else train_prior.to(probs)
    return adjust_posterior(probs, prior, em_prior(probs, prior, iters), absent)


@register
class PerScanPriorTargets(TargetTransform):
    """Target transform ``prior_shift_targets``: pseudo labels from each scan's prior-adjusted teacher
    posterior (hard targets: its argmax; soft targets: reweighted by pi_d / pi). The learnt prior counts
    the labelled points of the run; ``iters`` = 100 EM steps, ``absent`` = 1e-3."""

    name = "prior_shift_targets"

    def __init__(self, weight: float = 1.0, schedule=None, iters: int = 100, absent: float = 1e-3,
                 floor: float = 0.5, num_classes: int = 17) -> None:
        super().__init__(weight, schedule)
        self.iters, self.absent, self.floor = iters, absent, floor
        self.register_buffer("counts", torch.zeros(num_classes))

    def learnt_prior(self) -> Tensor | None:
        """Labelled point frequencies (add-one smoothed); None before any labelled point."""
        if self.counts.sum() == 0:
            return None
        return (self.counts + 1) / (self.counts.sum() + len(self.counts))

    def forward(self, ctx: StepContext, targets: Tensor) -> Tensor:
        if ctx.labels is not None and len(ctx.labels):
            self.counts += torch.bincount(ctx.labels, minlength=len(self.counts)).to(self.counts)
        prior = self.learnt_prior()
        batch = ctx.batch if ctx.batch is not None else torch.zeros(len(targets), dtype=torch.long)
        hard = bool((targets.max(dim=1).values == 1).all())
        out = targets.clone()
        for b in batch.unique():
            m = batch == b
            p = ctx.probs_teacher[m]
            pi = reference_prior(p, self.floor) if prior is None else prior.to(p)
            scan_prior = em_prior(p, pi, self.iters)
            if hard:
                adjusted = adjust_posterior(p, pi, scan_prior, self.absent)
                out[m] = F.one_hot(adjusted.argmax(dim=1), targets.shape[1]).to(targets)
            else:
                out[m] = adjust_posterior(targets[m], pi, scan_prior, self.absent)
        return out


@register
class PerScanPriorRule(PredictionRule):
    """Prediction rule ``prior_shift``: argmax (or, with ``decode: loki``, the Fréchet mean under the tooth
    metric) of the prior-adjusted posterior. ``prior``: the learnt class prior (17 numbers); without it the
    scan's own mean posterior with tooth classes floored at half the median tooth mass stands in, so only
    teeth the scan seems to lack are corrected."""

    name = "prior_shift"

    def __init__(self, weight: float = 1.0, schedule=None, prior: list[float] | None = None, iters: int = 100,
                 absent: float = 1e-3, floor: float = 0.5, decode: str = "argmax") -> None:
        super().__init__(weight, schedule)
        if decode not in ("argmax", "loki"):
            raise ValueError(f"decode must be argmax or loki, not {decode!r}")
        self.prior = None if prior is None else torch.as_tensor(prior, dtype=torch.float32)
        self.iters, self.absent, self.floor, self.decode = iters, absent, floor, decode
        self.register_buffer("metric", torch.as_tensor(tooth_metric(), dtype=torch.float32))

    def forward(self, probs: Tensor) -> Tensor:
        adjusted = correct_scan(probs, self.prior, self.iters, self.absent, self.floor)
        if self.decode == "loki":
            return frechet_mean(adjusted, self.metric)
        return adjusted.argmax(dim=1)
