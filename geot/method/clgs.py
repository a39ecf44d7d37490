"""Class-level geometric smoothing (CLGS): teeth are confused with their neighbours along the arch.

The prior row of tooth ``c`` is a Gaussian over arch positions centred on ``c``'s position with a
learnable width; gingiva is only confused with itself and no tooth is pulled towards gingiva.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geot.labels import ARCH_POSITION, NUM_CLASSES


def row_normalise(m: Tensor, reference_bug: bool = False) -> Tensor:
    """Divide each row by its sum. ``reference_bug`` divides column j by row j's sum instead (public code)."""
    s = m.sum(dim=-1)
    return m / s.unsqueeze(-2) if reference_bug else m / s.unsqueeze(-1)


def arch_prior(sigma: Tensor, reference_bug: bool = False) -> Tensor:
    """(C, C) row-stochastic prior; ``sigma`` (C,) are the widths in arch positions (positive)."""
    pos = torch.as_tensor(ARCH_POSITION, dtype=sigma.dtype, device=sigma.device)
    d = pos[None, :] - pos[:, None]
    s = sigma[:, None]
    g = torch.exp(-(d**2) / (2 * s**2)) / (s * math.sqrt(2 * math.pi))
    idx = torch.arange(len(pos), device=sigma.device)
    off_arch = (idx[:, None] == 0) | (idx[None, :] == 0)  # gingiva row and column
    g = torch.where(off_arch, (idx[:, None] == idx[None, :]).to(g), g)
    return row_normalise(g, reference_bug)


class ArchPrior(nn.Module):
    """The arch prior with one learnable width per class (softplus keeps it positive unless disabled)."""

    def __init__(self, sigma: float = 0.4, softplus: bool = True, num_classes: int = NUM_CLASSES,
                 reference_bug: bool = False) -> None:
        super().__init__()
        self.softplus, self.reference_bug = softplus, reference_bug
        init = math.log(math.expm1(sigma)) if softplus else sigma
        self.raw_sigma = nn.Parameter(torch.full((num_classes,), init))

    @property
    def sigma(self) -> Tensor:
        return F.softplus(self.raw_sigma) if self.softplus else self.raw_sigma

    def forward(self) -> Tensor:
        return arch_prior(self.sigma, self.reference_bug)
