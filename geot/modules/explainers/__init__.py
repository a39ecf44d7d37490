"""Explainers: per-vertex maps of a segmented scan (``Explainer``), one file per method."""
