"""The real jaws of ../shared/data, read once per test session, and the tools/robustness.py module.

Only for tests marked ``real_data`` (they skip when the folder is absent).
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from geot.data.features import PointFeatures, point_features
from geot.io.scan import Scan
from geot.io.teeth3ds import find_scans, read_scan
from tests.conftest import REAL_DATA

ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def real_jaws() -> tuple[Scan, ...]:
    return tuple(read_scan(entry.mesh, entry.labels) for entry in find_scans(REAL_DATA))


@functools.cache
def real_features() -> tuple[PointFeatures, ...]:
    """Canonical features of each real jaw as its file has it."""
    return tuple(point_features(scan) for scan in real_jaws())


@functools.cache
def robustness() -> ModuleType:
    """tools/robustness.py, whose transformations are what a user's files may have gone through."""
    spec = importlib.util.spec_from_file_location("robustness", ROOT / "tools" / "robustness.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["robustness"] = module  # dataclasses and pickling look modules up by name
    spec.loader.exec_module(module)
    return module
