"""Auxiliary modules: optional methods that plug into training and prediction through a few interfaces.

The trainer and the predictor know only the interfaces in :mod:`geot.addons.base`; a YAML list turns
modules on by name (``modules: [{name: elr, weight: 3.0, schedule: {start: 10}}]``). docs/modules.md
lists every module, its plug point and status.
"""

from geot.addons.base import (
    REGISTRY,
    Addon,
    Explainer,
    LossTerm,
    PredictionRule,
    ScanSelector,
    Schedule,
    StepContext,
    TargetTransform,
    build_addons,
    register,
)

__all__ = ["REGISTRY", "Addon", "Explainer", "LossTerm", "PredictionRule", "ScanSelector", "Schedule",
           "StepContext", "TargetTransform", "build_addons", "register"]
