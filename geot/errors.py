"""Errors a user can act on. The CLI prints them as one line, without a traceback."""

from __future__ import annotations

from pathlib import Path


class GeotError(Exception):
    """Base class: something about the user's input, files or settings is wrong."""


class ScanError(GeotError):
    """A scan or its label file cannot be used; names the file and the problem."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)


class CheckpointError(GeotError):
    """A checkpoint or model bundle is missing, truncated, corrupted or of the wrong kind."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class ConfigError(GeotError):
    """A configuration file or option is invalid."""
