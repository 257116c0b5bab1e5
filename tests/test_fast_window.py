"""The float32 rescale + window fast path equals pydicom's modality LUT + windowing.

``common.data.dicom`` folds RescaleSlope/Intercept and a LINEAR, LINEAR_EXACT or SIGMOID
window into one pass (first ingest spends most of its decode time there). Each case below
decodes the same stored pixels both ways: through ``decode_frame`` and through pydicom's
``apply_modality_lut`` + ``apply_voi_lut`` scaled by the window's output range.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from common.data.dicom import decode_frame, describe, open_dicom
from tests.shared_data import dicom_file

WINDOWED_REAL_FILES = [
    "ct_series_3slice/01.dcm",
    "ct_j2k_lossless.dcm",
    "mr_prostate_tcia_explicit_le.dcm",
    "dx_thorax_small_mono1_canine.dcm",
    "cr_hip_jpeg_extended_12bit.dcm",
]


def _reference(ds: pydicom.Dataset) -> np.ndarray:
    """pydicom's own functions, mapped onto [0, 1] by the window's output range."""
    values = apply_modality_lut(ds.pixel_array, ds)
    windowed = apply_voi_lut(values, ds)
    probe = apply_voi_lut(np.array([-1e12, 1e12]), ds)
    low, high = float(probe.min()), float(probe.max())
    unit = np.clip((windowed - low) / (high - low), 0, 1)
    return 1 - unit if ds.PhotometricInterpretation == "MONOCHROME1" else unit


def _both(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = open_dicom(path)
        fast = decode_frame(ds, describe(ds), 0)
        return fast, _reference(pydicom.dcmread(path))


@pytest.mark.parametrize("name", WINDOWED_REAL_FILES)
def test_real_files_decode_as_pydicom_windows_them(name: str) -> None:
    fast, reference = _both(dicom_file(name))

    assert fast.dtype == np.float32
    assert np.abs(fast - reference).max() < 1e-4


@pytest.mark.parametrize(
    ("function", "center", "width", "slope", "intercept", "photometric"),
    [
        ("LINEAR", 40, 400, 1, -1024, "MONOCHROME2"),
        ("LINEAR", 1500, 3000.5, 0.5, 10, "MONOCHROME1"),
        ("LINEAR_EXACT", -600, 1500, 1, -1024, "MONOCHROME2"),
        ("LINEAR_EXACT", 0.25, 0.5, 0.001, 0, "MONOCHROME2"),
        ("SIGMOID", 40, 400, 1, -1024, "MONOCHROME2"),
        ("SIGMOID", 900, 200, 2.5, -100, "MONOCHROME1"),
    ],
)
def test_every_window_function_matches_pydicom(
    tmp_path: Path,
    function: str,
    center: float,
    width: float,
    slope: float,
    intercept: float,
    photometric: str,
) -> None:
    ds = pydicom.dcmread(dicom_file("ct_series_3slice/02.dcm"))
    ds.VOILUTFunction = function
    ds.WindowCenter, ds.WindowWidth = center, width
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PhotometricInterpretation = photometric
    path = tmp_path / "variant.dcm"
    ds.save_as(path)

    fast, reference = _both(path)

    assert np.abs(fast - reference).max() < 1e-4
    assert 0.01 < fast.mean() < 0.99  # the window really cuts through the image


def test_a_window_the_fast_path_does_not_cover_still_decodes(tmp_path: Path) -> None:
    ds = pydicom.dcmread(dicom_file("ct_series_3slice/03.dcm"))
    ds.WindowCenter, ds.WindowWidth = 40, 1  # LINEAR width 1: a threshold, left to pydicom
    path = tmp_path / "threshold.dcm"
    ds.save_as(path)

    fast, reference = _both(path)

    assert np.abs(fast - reference).max() < 1e-4
    assert set(np.unique(fast)) <= {0.0, 1.0}
