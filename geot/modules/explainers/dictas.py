"""DictAS's dictionary lookup as an anomaly map (Qu et al., "DictAS: a framework for class-generalizable
few-shot anomaly segmentation via dictionary lookup", ICCV 2025).

A point whose feature cannot be rebuilt by a sparse (sparsemax) lookup in a dictionary of clean features
of its class is anomalous: 1 - (cos(q, retrieved) + 1) / 2, 0 for a dictionary entry, 0.5 for an
orthogonal feature. The same score filters pseudo labels in ``geot.modules.targets.dictas``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from geot.modules import register
from geot.modules.common import normalise
from geot.modules.explainers.reference import ReferenceExplainer


def sparsemax(z: Tensor, dim: int = -1) -> Tensor:
    """Euclidean projection of ``z`` onto the simplex (Martins & Astudillo, ICML 2016): sparse, sums to 1."""
    z = z.transpose(dim, -1)
    sorted_z, _ = z.sort(dim=-1, descending=True)
    cumsum = sorted_z.cumsum(-1)
    k = torch.arange(1, z.shape[-1] + 1, device=z.device, dtype=z.dtype)
    support = 1 + k * sorted_z > cumsum
    k_z = support.sum(-1, keepdim=True)
    tau = (cumsum.gather(-1, k_z - 1) - 1) / k_z.to(z.dtype)
    return (z - tau).clamp(min=0).transpose(dim, -1)


def dictionary_lookup_score(queries: Tensor, keys: Tensor, temperature: float = 0.05,
                            exclude: Tensor | None = None) -> Tensor:
    """1 - (cos(q, A K) + 1) / 2 with A = sparsemax(cos(q, K) / temperature); identity Q/K/V projections
    on normalised features. ``exclude`` (Q, K) bool marks entries a query may not use (itself)."""
    q, k = normalise(queries), normalise(keys)
    logits = q @ k.T / temperature
    if exclude is not None:
        logits = logits.masked_fill(exclude, -1e4)
    retrieved = sparsemax(logits) @ k
    return 1 - (F.cosine_similarity(q, retrieved, dim=-1) + 1) / 2


@register
class DictionaryLookupAnomaly(ReferenceExplainer):
    """Sparse dictionary-lookup anomaly score per point (0 typical .. 1 anomalous).

    Simplified: identity query/key/value projections instead of DictAS's trained generators, so cosine
    logits over ``temperature`` = 0.05 replace QK^T / sqrt(d); one scale, no pooling pyramid.
    """

    name = "dictas"

    def __init__(self, weight: float = 1.0, schedule=None, confidence: float = 0.9, pool: int = 2048,
                 temperature: float = 0.05) -> None:
        super().__init__(weight, schedule, confidence, pool)
        self.temperature = temperature

    def score(self, queries: Tensor, refs: Tensor, exclude: Tensor | None) -> Tensor:
        return dictionary_lookup_score(queries, refs, self.temperature, exclude)
