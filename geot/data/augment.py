"""Random rigid and scale perturbations of a cloud in the canonical frame, applied to positions and normals.

Rotations stay small around the occlusal axis: the canonical frame already fixes the orientation,
and left/right must never be mirrored (a mirrored jaw swaps the classes of the two quadrants).
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor


class Augment(BaseModel):
    """One augmentation recipe; every field is the half-width of a uniform range (0 disables it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rotate_deg: float = 0.0        # about the occlusal (z) axis
    tilt_deg: float = 0.0          # about x and y
    scale: float = 0.0             # isotropic factor in [1 - s, 1 + s]
    anisotropic: float = 0.0       # extra per-axis factor in [1 - a, 1 + a]
    translate: float = 0.0         # shift per axis, unit-sphere units
    jitter: float = 0.0            # Gaussian noise std per point, unit-sphere units

    def __call__(self, pos: Tensor, normal: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        """Return perturbed copies of ``pos`` and ``normal`` (normals stay unit length)."""

        def uniform(half: float, n: int = 1) -> Tensor:
            return (torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1) * half

        angles = torch.cat([uniform(math.radians(self.tilt_deg), 2), uniform(math.radians(self.rotate_deg))])
        linear = _rotation(angles) * (1 + uniform(self.scale))
        linear = linear @ torch.diag(1 + uniform(self.anisotropic, 3))
        linear = linear.to(pos.dtype)
        pos = pos @ linear.T + uniform(self.translate, 3).to(pos.dtype)
        if self.jitter:
            pos = pos + torch.randn(pos.shape, generator=g, dtype=pos.dtype) * self.jitter
        normal = normal @ torch.linalg.inv(linear)  # normals transform with the inverse transpose
        normal = normal / normal.norm(dim=1, keepdim=True).clamp(min=1e-12)
        return pos, normal


def _rotation(angles: Tensor) -> Tensor:
    """Rotation matrix R = Rz @ Ry @ Rx from three angles (radians)."""
    cx, cy, cz = torch.cos(angles)
    sx, sy, sz = torch.sin(angles)
    one, zero = torch.ones(()), torch.zeros(())
    rx = torch.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx]).view(3, 3)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy]).view(3, 3)
    rz = torch.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one]).view(3, 3)
    return (rz @ ry @ rx).double()


NONE = Augment()
WEAK = Augment(rotate_deg=10, tilt_deg=3, scale=0.05, translate=0.02, jitter=0.002)
STRONG = Augment(rotate_deg=20, tilt_deg=6, scale=0.1, anisotropic=0.1, translate=0.1, jitter=0.01)
