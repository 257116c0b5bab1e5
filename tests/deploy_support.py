"""Canary hospitals for the wire test: a checkerboard in every image, a fake name in every tag."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from common.data.synthetic import generate_site

REPO_ROOT = Path(__file__).resolve().parents[1]
CANARY_PATIENT = "ZZCANARY^QUENTIN^XK7"
CANARY_PATIENT_ID = "CANARY-7731-ID"
CANARY_BLOCK = 24  # pixels: a checkerboard block in the top-left corner of every image


def canary_pattern(size: int = CANARY_BLOCK) -> np.ndarray:
    """The checkerboard (0/1) stamped into every canary image."""
    return (np.indices((size, size)).sum(axis=0) % 2).astype(np.float32)


def make_canary_site(directory: Path, index: int, num_images: int) -> Path:
    """A synthetic hospital whose images carry the canary block and whose tags a fake name."""
    generate_site(directory, index, seed=0, num_images=num_images, image_size=64)
    pattern = canary_pattern()
    for path in sorted(directory.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array.copy()
        pixels[:CANARY_BLOCK, :CANARY_BLOCK] = (pattern * 4095).astype(pixels.dtype)
        ds.PixelData = pixels.tobytes()
        ds.PatientName = CANARY_PATIENT
        ds.PatientID = CANARY_PATIENT_ID
        ds.save_as(path, enforce_file_format=True)
    return directory
