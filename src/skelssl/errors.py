"""Exceptions raised by skelssl. Every message names the file at fault and says what to do."""

from __future__ import annotations

from os import PathLike


class SkelsslError(Exception):
    """Base class of every error skelssl raises on purpose."""


class BadInputError(SkelsslError):
    """An input file is malformed, truncated, inconsistent or holds invalid values.

    ``path`` names the file, ``line`` the 1-based line where there is one, ``reason`` what is wrong.
    """

    def __init__(self, path: str | PathLike[str], reason: str, line: int | None = None) -> None:
        self.path = str(path)
        self.reason = reason
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")


class StoreError(SkelsslError):
    """A store directory is missing, incomplete or inconsistent."""


class ConfigError(SkelsslError):
    """A configuration key or value is invalid."""
