"""DictAS's dictionary lookup as a pseudo-label filter (Qu et al., "DictAS: a framework for
class-generalizable few-shot anomaly segmentation via dictionary lookup", ICCV 2025).

A pseudo-labelled point whose (teacher) feature cannot be rebuilt from a dictionary of labelled features
of its pseudo-labelled class is likely mislabelled, and its pseudo label gets weight 0.
"""

from __future__ import annotations

from torch import Tensor

from geot.modules import StepContext, TargetTransform, register
from geot.modules.common import pseudo_labels, sample_balanced
from geot.modules.explainers.dictas import dictionary_lookup_score
from geot.modules.explainers.reference import per_class


@register
class DictionaryAnomalyFilter(TargetTransform):
    """Pseudo labels whose feature a dictionary of labelled features cannot rebuild get weight 0.

    A label is dropped when its lookup score exceeds ``kappa``. The dictionary is a class-balanced draw of
    the step's labelled features. kappa = 0.35 (retrieved cosine below 0.3) and the dictionary size are not
    verified.
    """

    name = "dictas_filter"

    def __init__(self, weight: float = 1.0, schedule=None, kappa: float = 0.35, dictionary: int = 1024,
                 temperature: float = 0.05) -> None:
        super().__init__(weight, schedule)
        self.kappa, self.dictionary, self.temperature = kappa, dictionary, temperature

    def forward(self, ctx: StepContext, targets: Tensor) -> Tensor:
        if ctx.unl is None or ctx.lab is None or len(ctx.lab.feats) < 2:
            return targets
        feats = ctx.unl.feats_teacher if ctx.unl.feats_teacher is not None else ctx.unl.feats
        chosen = sample_balanced(ctx.lab.labels, self.dictionary)
        teacher, _ = pseudo_labels(ctx.unl)

        def score(q: Tensor, r: Tensor, exclude: Tensor | None) -> Tensor:
            return dictionary_lookup_score(q, r, self.temperature, exclude)

        scores = per_class(score, feats.detach(), teacher, ctx.lab.feats[chosen].detach(), ctx.lab.labels[chosen])
        ctx.weigh((scores <= self.kappa).float())
        return targets
