"""Semi-supervised objectives: the GeoT noise model (IDTM, PLGR, CLGS) and its baselines."""
