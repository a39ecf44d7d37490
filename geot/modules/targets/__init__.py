"""Target transforms: rewrite or weigh the pseudo-label targets (``TargetTransform``), one file per method."""
