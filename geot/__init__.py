"""geot: tooth segmentation of intra-oral scans that learns from few labelled scans."""

from geot.errors import CheckpointError, ConfigError, GeotError, ScanError
from geot.io.scan import Scan

__version__ = "0.2.0"

__all__ = ["CheckpointError", "ConfigError", "GeotError", "Scan", "ScanError", "__version__"]
