"""Writing a site's or a run's small files so that a crash never leaves half a file.

``atomic_write`` writes a temporary file beside the target (created with the given mode),
fsyncs it and renames it over the target: readers see the old file or the new one.
"""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write(target: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``target`` with ``data`` atomically (the file gets ``mode`` when created)."""
    tmp = target.with_name(f".{target.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, target)
