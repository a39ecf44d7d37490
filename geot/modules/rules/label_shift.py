"""Per-scan label-shift correction at prediction time, after latent label shift (Roberts et al.,
"Unsupervised learning under latent label shift", NeurIPS 2022).

Every scan is its own domain: tooth appearance p(x|y) is shared, but the class prior p_d(y) differs with
missing, extracted or unerupted teeth. EM (Saerens et al., Neural Computation 2002) estimates the scan's
prior pi_d from the posteriors of its points, w_ic ∝ p_ic pi_dc / pi_c and pi_d <- mean_i w_i, and the
posterior is adjusted to p_d(y|x) ∝ p(y|x) pi_d(y) / pi(y); classes whose pi_dc falls below ``absent``
are removed (absent teeth). pi is the prior the model learnt (labelled point frequencies). The full DDFA
(domain discriminator, clustering, NMF) is not needed because the classes are known. The same correction
makes pseudo labels in ``geot.modules.targets.label_shift``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from geot.modules import PredictionRule, register
from geot.modules.metric import tooth_metric
from geot.modules.rules.loki import frechet_mean


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
class PerScanPriorRule(PredictionRule):
    """Argmax of the posterior corrected for each scan's own class prior (absent teeth removed).

    With ``decode: loki`` the Fréchet mean under the tooth metric replaces the argmax. ``prior``: the learnt
    class prior (one number per class); without it the scan's own mean posterior with tooth classes floored
    at half the median tooth mass stands in, so only teeth the scan seems to lack are corrected.
    """

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
