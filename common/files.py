"""Writing a site's or a run's small files so that a crash never leaves half a file.

``atomic_write`` writes a temporary file beside the target (created with the given mode),
fsyncs it and renames it over the target: readers see the old file or the new one. The
temporary file's name is unique, so two processes writing one target at once (two runs at a
site) each replace it whole: the last rename wins, and neither fails.
``staged_directory`` does the same for a whole folder (a generated site).
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


def atomic_write(target: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``target`` with ``data`` atomically (the file gets ``mode`` when created)."""
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(name)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def staged_directory(directory: Path) -> Iterator[Path]:
    """A temporary folder beside ``directory`` that replaces it when the block succeeds and
    is removed when it fails: readers find no folder or a complete one."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        yield staging
        if directory.exists():
            shutil.rmtree(directory)
        staging.rename(directory)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """A CSV file with ``header`` then ``rows``."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
