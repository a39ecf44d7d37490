"""Scan selectors: rank unlabelled scans for annotation (``ScanSelector``), one file per method."""
