"""The registry of auxiliary modules, and building them from a config's ``modules`` list.

``MODULES`` fills itself on first lookup by importing every file of the package (the five kind folders
``losses/``, ``targets/``, ``rules/``, ``selectors/``, ``explainers/`` hold the modules), so importing
``geot.modules`` stays cheap and a new module is one new file that registers itself.
"""

from __future__ import annotations

import inspect
from typing import Any

from geot.errors import ConfigError
from geot.modules.base import AuxModule, Schedule
from geot.modules.module_set import ModuleSet
from geot.registry import Registry

FOLDERS = ("losses", "targets", "rules", "selectors", "explainers")


MODULES: Registry[type[AuxModule]] = Registry("module", package="geot.modules")
register = MODULES.register


def build_module(spec: dict[str, Any], **context: Any) -> AuxModule:
    """One module from ``{name, weight?, schedule?, args?}``.

    ``context`` holds facts about the run (``num_classes``, ``feat_dim``); each goes to the module's
    ``__init__`` when it has a parameter of that name, so configs never repeat them.
    """
    spec = dict(spec)
    name = spec.pop("name", None)
    cls = MODULES.get_class(name)
    weight = spec.pop("weight", None)  # None: the module's own default weight
    schedule = Schedule.model_validate(spec.pop("schedule", {}))
    args = dict(spec.pop("args", {}))
    if spec:
        raise ConfigError(f"module {name!r}: unknown keys {sorted(spec)} (use name, weight, schedule, args)")
    parameters = inspect.signature(cls.__init__).parameters
    given = {key: value for key, value in context.items() if key in parameters}
    clash = sorted(set(given) & set(args))
    if clash:
        raise ConfigError(f"module {name!r}: {', '.join(clash)} come(s) from the run, not from args")
    if weight is not None:
        args["weight"] = float(weight)
    try:
        return cls(schedule=schedule, **given, **args)
    except TypeError as exc:
        raise ConfigError(f"module {name!r}: {exc}") from None


def build_modules(specs: list[dict[str, Any]], **context: Any) -> ModuleSet:
    """All modules of a config's ``modules`` list."""
    return ModuleSet([build_module(spec, **context) for spec in specs])
