"""Point-level geometric regularisation (PLGR): 3D neighbours with the same pseudo label get similar IDTMs."""

from __future__ import annotations

import torch
from torch import Tensor

from geot.ops import knn_graph


def plgr_loss(transition: Tensor, pseudo: Tensor, pos: Tensor, batch: Tensor, k: int = 16, sigma: float = 1.0,
              absolute_sigma: bool = False, points: int = 0) -> Tensor:
    """Weighted mean squared Frobenius distance between each point's matrix and its kNN's.

    Weight ``w_ij = [y_i = y_j] exp(-|x_i - x_j|^2 / (2 s^2))``. By default ``s = sigma * h`` with ``h``
    the median neighbour distance of the batch, so the weights vary with distance at the scan's scale
    (the reference's ``s = 1`` on unit-sphere coordinates makes every weight ~1). ``points`` > 0: the mean
    over that many centre points drawn at random, an unbiased estimate of the same mean; gathering a 17x17
    matrix per edge for every point costs about a fifth of a geot step on a CPU.
    """
    centres = None
    if 0 < points < len(pos):
        centres = torch.randperm(len(pos), device=pos.device)[:points].sort().values
    src, dst = knn_graph(pos, k, batch, centres=centres)
    with torch.no_grad():
        dist2 = ((pos[src] - pos[dst]) ** 2).sum(-1)
        scale = sigma if absolute_sigma else sigma * dist2.sqrt().median().clamp(min=1e-12)
        w = (pseudo[src] == pseudo[dst]).to(pos.dtype) * torch.exp(-dist2 / (2 * scale**2))
    diff = ((transition[src] - transition[dst]) ** 2).sum(dim=(1, 2))
    num = torch.zeros(len(pos), dtype=diff.dtype, device=diff.device).index_add_(0, dst, w * diff)
    den = torch.zeros(len(pos), dtype=diff.dtype, device=diff.device).index_add_(0, dst, w)
    per_point = num / (den + 1e-3)
    return (per_point if centres is None else per_point[centres]).mean()
