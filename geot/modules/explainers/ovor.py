"""The energy score OVOR trains (Huang et al., "OVOR: OnePrompt with virtual outlier regularization for
rehearsal-free class-incremental learning", ICLR 2024), as a per-point map.

E = -logsumexp of the logits: low on inputs like the training data, high on outliers; the open-set score
the ``ovor`` loss term shapes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from geot.modules import Explainer, register
from geot.modules.losses.ovor import energy


@register
class EnergyExplainer(Explainer):
    """Energy -logsumexp of the logits per point (higher = less like the training data)."""

    name = "energy"

    @torch.no_grad()
    def forward(self, model: nn.Module, x: Tensor, pos: Tensor, batch: Tensor) -> dict[str, Tensor]:
        return {"energy": energy(model(x, pos, batch).logits)}
