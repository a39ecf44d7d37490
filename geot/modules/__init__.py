"""Auxiliary modules: optional methods that plug into training and prediction through five interfaces.

The trainer and the predictor know only the interfaces exported here; a YAML list turns modules on by
name (``modules: [{name: elr, weight: 3.0, schedule: {start: 10}}]``). The modules themselves live in one
folder per kind (``losses/``, ``targets/``, ``rules/``, ``selectors/``, ``explainers/``), one file per
method, and are imported only when the registry is first looked up. docs/modules.md lists every module,
its plug point and status; ``geot modules`` lists what is registered.
"""

from geot.modules.base import (
    KINDS,
    AuxModule,
    Explainer,
    LossTerm,
    PredictionRule,
    ScanSelector,
    Schedule,
    TargetTransform,
)
from geot.modules.context import FrozenPart, LabelledPart, StepContext, UnlabelledPart
from geot.modules.module_set import ModuleSet
from geot.modules.registry import MODULES, build_module, build_modules, register

__all__ = ["KINDS", "MODULES", "AuxModule", "Explainer", "FrozenPart", "LabelledPart", "LossTerm", "ModuleSet",
           "PredictionRule", "ScanSelector", "Schedule", "StepContext", "TargetTransform", "UnlabelledPart",
           "build_module", "build_modules", "register"]
