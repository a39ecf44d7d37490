"""RCAL: representation calibration (Zhang et al., "When noisy labels meet long tail dilemmas: a
representation calibration method", ICCV 2023).

Per-class Gaussians of features with outliers removed (LOF), tail classes borrowing covariance from their
neighbours on the arch; the head learns from samples of them, and features are held near the frozen
student's (RCAL's individual calibration).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from geot.labels import NUM_CLASSES
from geot.modules import LossTerm, StepContext, register
from geot.modules.common import labelled_and_confident, randn, zero_loss
from geot.modules.metric import tooth_metric
from geot.modules.state import ResizableState


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
    """Head replay from calibrated class Gaussians, plus a hold of the features near the frozen student's.

    CE of the head on features sampled from the Gaussians, plus ``individual`` * mean ||f - f_frozen||^2
    (RCAL's individual calibration; the frozen student stands in for the self-supervised features), so the
    module needs the frozen student only when ``individual`` > 0.

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
                 lof_k: int = 20, shrinkage: float = 0.1, individual: float = 1.0,
                 num_classes: int = NUM_CLASSES) -> None:
        super().__init__(weight, schedule)
        self.threshold, self.bank_size, self.samples, self.donors = threshold, bank, samples, donors
        self.tail_fraction, self.outlier_fraction, self.lof_k = tail_fraction, outlier_fraction, lof_k
        self.shrinkage, self.individual, self.num_classes = shrinkage, individual, num_classes
        self.needs_frozen_student = individual > 0
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
        if self.individual > 0 and ctx.frozen is not None:
            pairs = [(ctx.unl, ctx.frozen.feats), (ctx.lab, ctx.frozen.feats_lab)]
            gaps = [((part.feats - frozen.detach()) ** 2).mean(1) for part, frozen in pairs if part is not None]
            if gaps:
                drift = torch.cat(gaps).mean()
                loss, logs["drift"] = loss + self.individual * drift, drift.item()
        return loss, logs
