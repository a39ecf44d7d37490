"""NormGrad saliency (Rebuffi et al., "There and back again: revisiting backpropagation saliency methods",
CVPR 2020): which points drive the model's decision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geot.modules import Explainer, register


@register
class NormGradSaliency(Explainer):
    """NormGrad saliency per point: ||dL/da|| * ||a|| at the backbone's last features.

    ``L`` is the cross-entropy of the model's own prediction, so large values mark the points that would
    move the weights most if their label were trusted. Equal to the Frobenius norm of that point's
    contribution ``g a^T`` to the head's first weight gradient.
    """

    name = "normgrad"

    def forward(self, model: nn.Module, x: Tensor, pos: Tensor, batch: Tensor) -> dict[str, Tensor]:
        with torch.enable_grad():
            feats = model(x, pos, batch).feats
            feats = feats.detach().requires_grad_(True)
            logits = model.head(feats)
            loss = F.cross_entropy(logits, logits.argmax(dim=1).detach(), reduction="sum")
            (grad,) = torch.autograd.grad(loss, feats)
        return {"saliency": (grad.norm(dim=1) * feats.detach().norm(dim=1))}
