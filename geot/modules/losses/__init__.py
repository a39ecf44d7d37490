"""Loss terms: extra losses on a training step (``LossTerm``), one file per method."""
