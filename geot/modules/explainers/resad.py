"""ResAD++'s residual feature as an anomaly map (Yao et al., "ResAD++: towards class agnostic anomaly
detection via residual feature learning", arXiv 2025).

A point's score is the distance of its feature to the nearest clean reference feature of its predicted
class: typical points have a near twin, atypical ones do not.
"""

from __future__ import annotations

import torch
from torch import Tensor

from geot.modules import register
from geot.modules.explainers.reference import ReferenceExplainer


def residual_distance(queries: Tensor, refs: Tensor, exclude: Tensor | None = None) -> Tensor:
    """||f - NN(f)|| to the nearest reference row (rows marked in ``exclude`` do not count)."""
    d = torch.cdist(queries, refs, compute_mode="donot_use_mm_for_euclid_dist")  # exact zeros
    if exclude is not None:
        d = d.masked_fill(exclude, float("inf"))
    return d.min(dim=1).values


@register
class ResidualFeatureAnomaly(ReferenceExplainer):
    """Distance of each point's feature to the nearest reference feature of its predicted class.

    ||f_i - NN_{ref, class y^_i}(f_i)||: ResAD's residual, without its hypersphere training or VQ matching.
    """

    name = "resad"

    def score(self, queries: Tensor, refs: Tensor, exclude: Tensor | None) -> Tensor:
        return residual_distance(queries, refs, exclude)
