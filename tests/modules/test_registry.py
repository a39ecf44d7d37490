"""The modules' contract: registry and lazy loading, build context, declared capabilities, ``geot modules``."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import geot
from geot.cli import app
from geot.errors import ConfigError
from geot.modules import KINDS, MODULES, AuxModule, build_module, build_modules
from geot.modules.registry import FOLDERS


def test_importing_the_package_loads_no_module():
    """``import geot.modules`` stays cheap: the method files load on the registry's first lookup."""
    code = ("import sys, geot.modules as m\n"
            "loaded = lambda: sorted(k for k in sys.modules if k.count('.') == 3 and k.startswith('geot.modules.'))\n"
            "assert loaded() == [], loaded()\n"
            "assert 'elr' in m.MODULES and 'geot.modules.losses.elr' in loaded()\n")
    env = {**os.environ, "PYTHONPATH": str(Path(geot.__file__).parents[1])}  # this checkout's geot
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_every_module_lives_in_its_kind_folder_and_says_what_it_does():
    folder_of = dict(zip(KINDS, FOLDERS, strict=True))
    assert len(MODULES) >= 39
    for name, cls in MODULES.items():
        assert cls.name == name and issubclass(cls, KINDS[cls.kind]), name
        assert cls.__module__.split(".")[2] == folder_of[cls.kind], (name, cls.__module__)
        assert inspect.getdoc(cls).splitlines()[0].endswith("."), name  # a one-line summary
        assert sys.modules[cls.__module__].__doc__, cls.__module__  # the file names its method


def test_unknown_name_lists_the_choices():
    with pytest.raises(ConfigError, match=r"unknown module 'magic'; available: .*\belr\b.*\bpskd\b"):
        build_module({"name": "magic"})


def test_context_reaches_the_modules_that_take_it():
    """Run facts go to the parameters of that name and nowhere else; a config cannot override them."""
    elr = build_module({"name": "elr"}, num_classes=5, feat_dim=8)
    assert elr.memory.dim == 5
    heads = build_module({"name": "head_diversity"}, num_classes=5, feat_dim=8)
    assert heads.heads.shape[1:] == (5, 8)
    assert build_module({"name": "loki"}, num_classes=5, feat_dim=8).metric.shape == (17, 17)  # takes neither
    with pytest.raises(ConfigError, match="num_classes come"):
        build_module({"name": "elr", "args": {"num_classes": 3}}, num_classes=5)
    assert build_module({"name": "elr", "args": {"num_classes": 3}}).memory.dim == 3  # no context: args decide


def test_capabilities_are_declared_and_gathered():
    for cls in MODULES.values():
        assert isinstance(cls.needs_weak_student, bool) and isinstance(cls.needs_frozen_student, bool)
    assert AuxModule.needs_weak_student is False and AuxModule.needs_frozen_student is False
    plain = build_modules([{"name": "elr"}, {"name": "pskd"}])
    assert not plain.needs_weak_student and not plain.needs_frozen_student
    assert build_modules([{"name": "elr"}, {"name": "dual_view_kl"}]).needs_weak_student
    assert build_modules([{"name": "cr_kd"}]).needs_frozen_student
    # a need that depends on the arguments
    assert build_modules([{"name": "rcal"}]).needs_frozen_student
    assert not build_modules([{"name": "rcal", "args": {"individual": 0.0}}]).needs_frozen_student
    assert not build_modules([{"name": "disa"}]).needs_frozen_student
    assert build_modules([{"name": "disa", "args": {"use_frozen_student": True}}]).needs_frozen_student


def test_cli_lists_every_module_under_its_kind():
    result = CliRunner().invoke(app, ["modules"], catch_exceptions=False, terminal_width=100)
    assert result.exit_code == 0
    titles = list(re.finditer(rf"^({'|'.join(KINDS)}): ", result.output, flags=re.M))
    assert [t.group(1) for t in titles] == list(KINDS)
    for i, title in enumerate(titles):
        section = result.output[title.end():titles[i + 1].start() if i + 1 < len(titles) else None]
        listed = re.findall(r"^│ (\S+) +│ \S", section, flags=re.M)
        assert listed == sorted(n for n, cls in MODULES.items() if cls.kind == title.group(1))
        for name in listed:  # each with the start of its summary
            assert inspect.getdoc(MODULES[name]).split()[0] in section
