"""Prediction rules: per-vertex posteriors -> labels at prediction time (``PredictionRule``), one file per method."""
