"""Importing this registers every shipped module (kept apart so base.py stays free of them)."""

from geot.addons import elr, explainers, legogcd, loki, pskd, selectors  # noqa: F401
