"""common.data.dicom on the 17 real sample files: every transfer syntax, correct pixel semantics.

The expected means and medians were checked by eye on rendered images (bone and contrast
bright, air dark, MONOCHROME1 radiographs inverted, ultrasound Doppler in red/blue).
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch

from common.config import DataConfig
from common.data.dicom import decode_frame, describe, frame_order, open_dicom
from common.data.sites import load_site
from tests.shared_data import DICOM_DIR, dicom_file

# name, decoded middle-frame shape, frames, mean, median (values in [0, 1])
EXPECTED = [
    ("cr_chest_pa_j2k_lossy_mono1.dcm", (1955, 1841), 1, 0.754, 0.812),
    ("cr_extremity_j2k_lossless_mono1.dcm", (1760, 1760), 1, 0.696, 0.892),
    ("cr_hip_jpeg_extended_12bit.dcm", (2140, 1760), 1, 0.442, 0.494),
    ("ct_enhanced_2frame_rle.dcm", (512, 512), 2, 0.154, 0.000),
    ("ct_j2k_lossless.dcm", (512, 512), 1, 0.157, 0.000),
    ("ct_jpegls_near_lossless.dcm", (512, 512), 1, 0.606, 0.806),
    ("ct_series_3slice/01.dcm", (512, 512), 1, 0.173, 0.000),
    ("ct_series_3slice/02.dcm", (512, 512), 1, 0.176, 0.000),
    ("ct_series_3slice/03.dcm", (512, 512), 1, 0.178, 0.000),
    ("dx_chest_pa_j2k_lossless_mono1.dcm", (2128, 2000), 1, 0.626, 0.681),
    ("dx_thorax_small_mono1_canine.dcm", (169, 211), 1, 0.350, 0.357),
    ("mr_enhanced_10frame_rle.dcm", (64, 64), 10, 0.239, 0.186),
    ("mr_j2k_lossy_1024.dcm", (1024, 1024), 1, 0.142, 0.059),
    ("mr_jpeg_lossless_p14_1024.dcm", (1024, 1024), 1, 0.142, 0.059),
    ("mr_prostate_tcia_explicit_le.dcm", (176, 176), 1, 0.104, 0.007),
    ("nm_jpeg_lossless_sv1.dcm", (1024, 256), 1, 0.122, 0.009),
    ("us_multiframe_jpeg_baseline_ybr.dcm", (240, 320, 3), 8, 0.193, 0.110),
]


def _middle_frame(path: Path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = open_dicom(path)
        info = describe(ds)
        order = frame_order(ds, info.frames)
        return decode_frame(ds, info, order[len(order) // 2])


def test_the_sample_folder_holds_exactly_the_17_expected_files() -> None:
    found = sorted(str(p.relative_to(DICOM_DIR)) for p in DICOM_DIR.rglob("*.dcm"))

    assert found == sorted(name for name, *_ in EXPECTED)


@pytest.mark.parametrize(("name", "shape", "frames", "mean", "median"), EXPECTED)
def test_every_real_file_decodes_with_verified_statistics(
    name: str, shape: tuple[int, ...], frames: int, mean: float, median: float
) -> None:
    path = dicom_file(name)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = describe(open_dicom(path))
    image = _middle_frame(path)

    assert info.frames == frames
    assert image.shape == shape
    assert image.dtype == np.float32
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert image.mean() == pytest.approx(mean, abs=0.005)
    assert float(np.median(image)) == pytest.approx(median, abs=0.005)


def test_monochrome1_is_inverted_so_that_dense_is_bright() -> None:
    path = dicom_file("dx_thorax_small_mono1_canine.dcm")
    stored = pydicom.dcmread(path).pixel_array.astype(float)

    image = _middle_frame(path)

    assert np.corrcoef(stored.ravel(), image.ravel())[0, 1] < -0.99


def test_ct_uses_rescale_and_the_files_window_in_hounsfield_units() -> None:
    path = dicom_file("ct_j2k_lossless.dcm")  # window 40 / 100 HU, intercept -1024
    stored = pydicom.dcmread(path).pixel_array.astype(float)
    hounsfield = stored * 1.0 - 1024.0

    image = _middle_frame(path)

    assert image[hounsfield < -10].max() == pytest.approx(0.0, abs=1e-6)  # below the window
    assert image[hounsfield > 90].min() == pytest.approx(1.0, abs=1e-6)  # above the window
    inside = (hounsfield > 0) & (hounsfield < 80)
    expected = (hounsfield[inside] - (40 - 0.5 - 49.5)) / 99.0  # DICOM LINEAR windowing
    assert np.allclose(image[inside], expected, atol=0.02)


def test_ybr_ultrasound_is_converted_to_rgb() -> None:
    image = _middle_frame(dicom_file("us_multiframe_jpeg_baseline_ybr.dcm"))
    red, green, blue = image[..., 0], image[..., 1], image[..., 2]

    greyish = (np.abs(red - green) < 0.05) & (np.abs(green - blue) < 0.05)
    assert greyish.mean() > 0.8  # B-mode background is grey in RGB (not green/pink as raw YCbCr)
    assert ((red - blue) > 0.3).sum() > 100  # Doppler flow towards the probe: red
    assert ((blue - red) > 0.3).sum() > 100  # and away from it: blue


def test_enhanced_ct_frames_are_ordered_by_plane_position() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = open_dicom(dicom_file("ct_enhanced_2frame_rle.dcm"))

    order = frame_order(ds, 2)

    orientation = ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
    iop = np.asarray(orientation.ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    groups = ds.PerFrameFunctionalGroupsSequence
    along_normal = [
        float(np.dot(normal, groups[i].PlanePositionSequence[0].ImagePositionPatient))
        for i in order
    ]
    assert order == [1, 0]  # stored out of order
    assert along_normal == sorted(along_normal)


def _series_site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    shutil.copytree(DICOM_DIR / "ct_series_3slice", site / "normal" / "series")
    (site / "opacity").mkdir()
    shutil.copy(dicom_file("dx_thorax_small_mono1_canine.dcm"), site / "opacity" / "dx.dcm")
    return site


def test_a_series_folder_is_one_sample_whose_middle_slice_is_used(tmp_path: Path) -> None:
    site = _series_site(tmp_path)
    config = DataConfig(image_size=32, test_fraction=0.0)

    data = load_site(site, config, "series-site")

    assert data.train_x.shape == (2, 1, 32, 32)
    series = next(s for s in data.samples if len(s.members) == 3)
    positions = [m.info.slice_position for m in series.members]
    assert positions == sorted(positions)
    middle = load_site(_single(tmp_path, "ct_series_3slice/02.dcm"), config, "one")
    assert torch.allclose(data.train_x[data.train_y == 0][0], middle.train_x[0])


def test_stack_mode_gives_the_ordered_volume_and_all_mode_every_slice(tmp_path: Path) -> None:
    site = _series_site(tmp_path)

    stack = load_site(
        site, DataConfig(image_size=32, test_fraction=0.0, frames="stack", stack_depth=3), "s"
    )
    every = load_site(site, DataConfig(image_size=32, test_fraction=0.0, frames="all"), "s")

    assert stack.train_x.shape == (2, 1, 3, 32, 32)
    volume = stack.train_x[stack.train_y == 0][0]
    lowest = load_site(
        _single(tmp_path, "ct_series_3slice/03.dcm"),
        DataConfig(image_size=32, test_fraction=0.0),
        "z",
    )
    assert torch.allclose(volume[:, 0], lowest.train_x[0], atol=1e-6)  # 03.dcm: lowest z first
    assert every.train_x.shape == (4, 1, 32, 32)


def _single(tmp_path: Path, name: str) -> Path:
    site = tmp_path / f"single-{name.replace('/', '-')}"
    (site / "normal").mkdir(parents=True)
    (site / "opacity").mkdir()
    shutil.copy(dicom_file(name), site / "normal" / "image.dcm")
    return site


def test_the_whole_sample_folder_loads_as_a_site_in_rgb(tmp_path: Path) -> None:
    site = tmp_path / "all17"
    shutil.copytree(DICOM_DIR, site / "normal", ignore=shutil.ignore_patterns("*.md", "licenses"))
    (site / "opacity").mkdir()

    data = load_site(site, DataConfig(image_size=48, channels=3, test_fraction=0.0), "all17")

    assert data.train_x.shape == (15, 3, 48, 48)  # 14 files + 1 three-slice series
    assert data.skipped == []
    assert data.train_x.dtype == torch.float32
    assert float(data.train_x.min()) >= 0.0 and float(data.train_x.max()) <= 1.0
