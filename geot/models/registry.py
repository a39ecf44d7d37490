"""The backbone registry: a backbone is a class with a ``name``, a pydantic ``Settings`` (its ``model.args``),
``out_channels``, and ``forward(x, pos, batch) -> (P, out_channels)`` per-point features."""

from __future__ import annotations

from geot.registry import Registry

BACKBONES: Registry = Registry("backbone", package="geot.models")  # a new backbone: one file in geot/models
