"""Errors that medfed reports to people as one line (no traceback).

Every problem caused by input (a site folder, a config value, a file) is raised as a
``MedfedError`` subclass whose ``str()`` is a complete, single-line explanation. The CLI
prints it and exits non-zero; the ClientApp lets Flower carry it back to the server.
"""

from __future__ import annotations

from pathlib import Path


class MedfedError(Exception):
    """Base class: an input problem with a one-line, human-readable message."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class ConfigError(MedfedError):
    """A configuration key or value is unknown or invalid."""


class SiteDataError(MedfedError):
    """A hospital's data folder cannot be used (names the site and, if known, the file)."""

    def __init__(self, site: str, reason: str, path: Path | str | None = None) -> None:
        self.site = site
        self.reason = reason
        self.path = None if path is None else str(path)
        where = f"{self.path}: " if self.path else ""
        super().__init__(f"site '{site}': {where}{reason}")
