"""Training methods, one registered class per file: supervised, mean teacher, FixMatch and GeoT (IDTM, PLGR, CLGS).

A new method is one file in this package: subclass :class:`Method` and decorate it with ``@METHODS.register``
(the registry imports every file here on first lookup).
"""

from geot.method.base import METHODS, Method, build_method

__all__ = ["METHODS", "Method", "build_method"]
