"""Explainers that score each point against clean reference features of its (predicted) class.

Shared by the dictionary-lookup (``dictas``) and residual-feature (``resad``) explainers: the reference
is a fixed pool set with ``set_reference`` (e.g. features of labelled scans) or, without one, the scan's
own confident points, each point excluded from its own lookup. No training state.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from geot.modules import Explainer

Score = Callable[[Tensor, Tensor, Tensor | None], Tensor]  # (queries, references, excluded pairs) -> (Q,)


def per_class(score_fn: Score, queries: Tensor, query_cls: Tensor, refs: Tensor, ref_cls: Tensor,
              query_ids: Tensor | None = None, ref_ids: Tensor | None = None) -> Tensor:
    """Apply ``score_fn(q, r, exclude)`` class by class (a class without 2 references uses them all);
    ``*_ids`` identify the same point on both sides, which may not look itself up."""
    out = torch.zeros(len(queries), dtype=queries.dtype, device=queries.device)
    for c in query_cls.unique():
        qm = query_cls == c
        rm = ref_cls == c
        if int(rm.sum()) < 2:
            rm = torch.ones_like(ref_cls, dtype=torch.bool)
        exclude = None
        if query_ids is not None and ref_ids is not None:
            exclude = query_ids[qm][:, None] == ref_ids[rm][None, :]
        out[qm] = score_fn(queries[qm], refs[rm], exclude)
    return out


class ReferenceExplainer(Explainer):
    """Explainer with an optional fixed reference pool; else the scan's confident points are the pool."""

    def __init__(self, weight: float = 1.0, schedule=None, confidence: float = 0.9, pool: int = 2048) -> None:
        super().__init__(weight, schedule)
        self.confidence, self.pool = confidence, pool
        self.register_buffer("ref_feats", torch.zeros(0, 0))
        self.register_buffer("ref_labels", torch.zeros(0, dtype=torch.long))

    def set_reference(self, feats: Tensor, labels: Tensor) -> None:
        """A fixed pool of clean features (e.g. of labelled scans) and their classes."""
        self.ref_feats, self.ref_labels = feats.detach().float(), labels.long()

    def score(self, queries: Tensor, refs: Tensor, exclude: Tensor | None) -> Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, model: nn.Module, x: Tensor, pos: Tensor, batch: Tensor) -> dict[str, Tensor]:
        out = model(x, pos, batch)
        logits, feats = out.logits, out.feats
        probs = torch.softmax(logits, dim=1)
        conf, predicted = probs.max(dim=1)
        if len(self.ref_feats):
            refs, ref_cls = self.ref_feats.to(feats), self.ref_labels.to(feats.device)
            return {self.name: per_class(self.score, feats, predicted, refs, ref_cls)}
        ids = (conf >= self.confidence).nonzero().squeeze(1)
        if len(ids) < 2:
            ids = torch.arange(len(feats), device=feats.device)
        ids = ids[torch.randperm(len(ids)).to(ids.device)[: self.pool]]
        scores = per_class(self.score, feats, predicted, feats[ids], predicted[ids],
                           torch.arange(len(feats), device=feats.device), ids)
        return {self.name: scores}
