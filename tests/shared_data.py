"""Where the tests find the real sample data (``../shared/data`` beside the repository).

Set ``MEDFED_SHARED_DATA`` to use another copy; tests that need it fail loudly if it is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("MEDFED_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
DICOM_DIR = SHARED_DATA / "dicom"
MEDMNIST_DIR = SHARED_DATA / "medmnist"


def dicom_file(name: str) -> Path:
    """A real sample DICOM file (asserting it exists, so a missing data folder is obvious)."""
    path = DICOM_DIR / name
    assert path.is_file(), f"shared sample data missing: {path} (set MEDFED_SHARED_DATA)"
    return path
