"""Per-vertex maps for a segmented scan: where the model is unsure, and which points drive its decision."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geot.addons.base import Explainer, register


@register
class Uncertainty(Explainer):
    """``uncertainty``: normalised entropy (0 sure .. 1 uniform) and top-2 margin of the posterior."""

    name = "uncertainty"

    @torch.no_grad()
    def forward(self, model: nn.Module, x: Tensor, pos: Tensor, batch: Tensor) -> dict[str, Tensor]:
        probs = torch.softmax(model(x, pos, batch).logits, dim=1)
        entropy = -(probs * torch.log(probs.clamp(min=1e-12))).sum(dim=1) / torch.log(torch.tensor(probs.shape[1]))
        top2 = probs.topk(2, dim=1).values
        return {"entropy": entropy, "margin": top2[:, 0] - top2[:, 1]}


@register
class NormGradSaliency(Explainer):
    """``normgrad`` (Rebuffi et al. 2020): per point, ||dL/da|| * ||a|| at the backbone's last features.

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
