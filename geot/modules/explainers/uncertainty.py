"""Predictive uncertainty per vertex: normalised entropy and top-2 margin of the posterior.

The textbook measures (no paper): where the model is unsure, for a clinician to check first.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from geot.modules import Explainer, register


@register
class Uncertainty(Explainer):
    """Normalised entropy (0 sure .. 1 uniform) and top-2 margin of each point's posterior."""

    name = "uncertainty"

    @torch.no_grad()
    def forward(self, model: nn.Module, x: Tensor, pos: Tensor, batch: Tensor) -> dict[str, Tensor]:
        probs = torch.softmax(model(x, pos, batch).logits, dim=1)
        entropy = -(probs * torch.log(probs.clamp(min=1e-12))).sum(dim=1) / torch.log(torch.tensor(probs.shape[1]))
        top2 = probs.topk(2, dim=1).values
        return {"entropy": entropy, "margin": top2[:, 0] - top2[:, 1]}
