"""Supervised training: labelled scans only (the baseline every semi-supervised method must beat)."""

from __future__ import annotations

from geot.method.base import METHODS, Method


@METHODS.register
class Supervised(Method):
    """Cross-entropy on labelled points; unlabelled scans are not used."""

    name = "supervised"
    learns_from_unlabelled = False
