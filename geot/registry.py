"""Registries: one per kind of extension (backbones, methods, auxiliary modules), filled by a decorator.

A registry maps names to classes, so a config can say ``{name: dgcnn, args: {...}}``. On first lookup it
imports every module of its package, so a new variant is one file in that package that registers itself.
Lookups of unknown names fail with the list of what is registered.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

from geot.errors import ConfigError

T = TypeVar("T", bound=type)


class Registry(Mapping[str, T], Generic[T]):
    """Names -> classes of one ``kind``; read like a dict, filled with :meth:`register`."""

    def __init__(self, kind: str, package: str | None = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._package = package  # whose modules register the shipped entries; imported on first lookup

    def register(self, cls: T) -> T:
        """Class decorator: make ``cls`` available under its ``name`` class attribute."""
        name = cls.name  # type: ignore[attr-defined]
        if name in self._items and self._items[name] is not cls:
            raise ValueError(f"two {self.kind}s are named {name!r}")
        self._items[name] = cls
        return cls

    def _load(self) -> None:
        if self._package is None:
            return
        package, self._package = importlib.import_module(self._package), None
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            importlib.import_module(info.name)

    def get_class(self, name: object) -> T:
        """The class registered as ``name``; a ConfigError listing the choices otherwise."""
        self._load()
        if not isinstance(name, str) or name not in self._items:
            raise ConfigError(f"unknown {self.kind} {name!r}; available: {', '.join(sorted(self._items))}")
        return self._items[name]

    def __getitem__(self, name: str) -> T:
        self._load()
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(self._items)

    def __len__(self) -> int:
        self._load()
        return len(self._items)
