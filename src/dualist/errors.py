"""Exceptions raised by dualist.

Every error tells the user *what* is wrong, *where* (file and line when there is one) and *how* to
fix it, so the CLI can print it without a traceback.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DualistError", "DataError", "ConfigError", "StaleArtifactError", "MissingDependencyError"]


class DualistError(Exception):
    """Base class of every error dualist raises on purpose."""


class DataError(DualistError, ValueError):
    """Bad input data: names the file, the line (1-based) and gives a hint."""

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None,
                 hint: str | None = None):
        self.path = str(path) if path is not None else None
        self.line = line
        self.hint = hint
        where = ""
        if self.path is not None:
            where = self.path + (f":{line}" if line is not None else "") + ": "
        text = where + message
        if hint:
            text += f"\n  hint: {hint}"
        super().__init__(text)


class ConfigError(DualistError, ValueError):
    """A configuration value or combination that cannot work."""


class StaleArtifactError(DualistError):
    """An artifact on disk was made from other inputs or settings than the ones asked for now."""


class MissingDependencyError(DualistError, ImportError):
    """An optional dependency is needed for the requested feature."""

    def __init__(self, package: str, feature: str, extra: str | None = None):
        install = f"pip install 'dualist[{extra}]'" if extra else f"pip install {package}"
        super().__init__(f"{feature} needs the optional package '{package}'. Install it with: {install}")
