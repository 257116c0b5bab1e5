"""Decode one DICOM file into a normalised image tensor (pydicom does the parsing).

Pixel semantics, in order: stored values -> Modality LUT (RescaleSlope/Intercept) -> VOI LUT or
WindowCenter/Width when present, else robust percentile windowing -> MONOCHROME1 inverted so
that bright means dense everywhere -> [0, 1] -> resized with torch to the model's input.
Multi-frame files contribute their middle frame (the documented choice for 2D models).
Problems are raised as ``DicomReadError`` with a short reason; callers decide to skip or stop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import torch
import torch.nn.functional as F
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_rescale, apply_voi_lut

LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5


class DicomReadError(Exception):
    """A file that cannot become a training image; ``str()`` is a short reason."""


def read_dicom_image(path: Path, size: int, channels: int = 1) -> torch.Tensor:
    """Return a float32 tensor of shape (channels, size, size) with values in [0, 1]."""
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        raise DicomReadError("not a DICOM file") from None
    except (OSError, EOFError, ValueError) as exc:
        raise DicomReadError(f"unreadable DICOM ({type(exc).__name__})") from None
    if "PixelData" not in ds:
        raise DicomReadError("DICOM object has no pixel data")
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for bad/unsupported pixel data
        raise DicomReadError(f"cannot decode pixel data ({type(exc).__name__})") from None
    image = _to_unit_range(ds, np.asarray(pixels))
    return _resize(image, size, channels)


def _to_unit_range(ds: pydicom.Dataset, pixels: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3) float32 in [0, 1] with bright = dense."""
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        pixels = pixels[frames // 2]
    if pixels.size == 0:
        raise DicomReadError("zero-size image")
    if ds.get("SamplesPerPixel", 1) == 3:
        return pixels.astype(np.float32) / max(float(pixels.max()), 1.0)
    values = apply_rescale(pixels.astype(np.float64), ds)
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        values = apply_voi_lut(values, ds)
    low, high = np.percentile(values, [LOW_PERCENTILE, HIGH_PERCENTILE])
    scaled = np.clip((values - low) / max(high - low, 1e-6), 0.0, 1.0)
    if ds.get("PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        scaled = 1.0 - scaled
    return scaled.astype(np.float32)


def _resize(image: np.ndarray, size: int, channels: int) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(image))
    tensor = tensor.permute(2, 0, 1) if tensor.ndim == 3 else tensor.unsqueeze(0)
    if channels == 1 and tensor.shape[0] == 3:
        tensor = tensor.mean(dim=0, keepdim=True)
    elif channels == 3 and tensor.shape[0] == 1:
        tensor = tensor.expand(3, -1, -1)
    resized = F.interpolate(tensor.unsqueeze(0), size=(size, size), mode="bilinear", antialias=True)
    return resized.squeeze(0).clamp_(0.0, 1.0)
