"""Importing this registers every shipped module (kept apart so base.py stays free of them)."""

from geot.addons import (  # noqa: F401
    adapters,
    anomaly,
    contrastive,
    elr,
    explainers,
    gradnorm,
    hpm,
    legogcd,
    loki,
    priors,
    prototypes,
    pskd,
    regularisers,
    rerank,
    selectors,
    teachers,
)
