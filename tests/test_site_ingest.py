"""load_site on a messy export: every problem is skipped with its reason, good files still load."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from common.config import DataConfig
from common.data.medmnist import load_npz_site
from common.data.sites import load_site
from common.errors import ConfigError, SiteDataError
from tests.messy_site import GOOD, PROBLEMS, build_messy_site
from tests.shared_data import MEDMNIST_DIR, dicom_file

CONFIG = DataConfig(image_size=32)


@pytest.fixture
def messy(tmp_path: Path) -> Path:
    return build_messy_site(tmp_path / "hospital-messy")


def test_each_problem_is_skipped_with_its_reason_and_good_files_load(messy: Path) -> None:
    data = load_site(messy, CONFIG, "hospital-messy")

    reasons = {str(s.path.relative_to(messy)): s.reason for s in data.skipped}
    for relative, word in PROBLEMS.items():
        assert word in reasons.get(relative, ""), (relative, reasons.get(relative))
    assert len(data.skipped) == len(PROBLEMS)
    assert data.train_x.shape == (len(GOOD), 1, 32, 32)
    assert sorted(data.train_y.tolist()) == [0, 0, 1, 1]


def test_skip_reasons_never_quote_tag_values(messy: Path) -> None:
    data = load_site(messy, CONFIG, "hospital-messy")

    text = " ".join(s.reason for s in data.skipped)
    assert "DOE" not in text and "Dog" not in text


def test_strict_mode_stops_at_the_first_problem_naming_site_and_file(messy: Path) -> None:
    with pytest.raises(SiteDataError) as raised:
        load_site(messy, DataConfig(image_size=32, strict=True), "hospital-messy")

    message = str(raised.value)
    assert message.startswith("site 'hospital-messy': ")
    assert "\n" not in message
    assert any(name in message for name in PROBLEMS)


def test_a_site_with_nothing_usable_fails_with_one_line_naming_it(tmp_path: Path) -> None:
    site = tmp_path / "hospital-empty"
    (site / "normal").mkdir(parents=True)
    (site / "opacity").mkdir()
    (site / "normal" / "a.dcm").write_text("not an image")

    with pytest.raises(SiteDataError) as raised:
        load_site(site, CONFIG, "hospital-empty")

    message = str(raised.value)
    assert "site 'hospital-empty'" in message and "no usable training images" in message
    assert "a.dcm: not a DICOM file" in message and "\n" not in message


def test_class_subfolders_report_unknown_folders_and_hidden_files_are_ignored(
    tmp_path: Path,
) -> None:
    site = tmp_path / "site"
    for folder, name in (
        ("normal", "dx_thorax_small_mono1_canine.dcm"),
        ("opacity", "mr_prostate_tcia_explicit_le.dcm"),
        ("misc", "ct_j2k_lossless.dcm"),
    ):
        (site / folder).mkdir(parents=True)
        shutil.copy(dicom_file(name), site / folder / "image")  # PACS exports: no extension
    (site / "normal" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")

    data = load_site(site, DataConfig(image_size=16, test_fraction=0.0), "site")

    assert data.train_y.tolist() == [0, 1]
    assert [(s.path.name, "not a class" in s.reason) for s in data.skipped] == [("misc", True)]


def test_unknown_settings_are_config_errors(messy: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.frames"):
        load_site(messy, DataConfig(frames="every-other"), "hospital-messy")


def test_medmnist_npz_is_a_second_source_with_its_own_splits() -> None:
    config = DataConfig(image_size=32, class_names="normal,pneumonia")

    data = load_npz_site(
        MEDMNIST_DIR / "pneumoniamnist.npz",
        config,
        "pneumonia",
        {"train": range(100), "val": range(10), "test": range(20)},
    )

    assert data.train_x.shape == (100, 1, 32, 32)
    assert (len(data.val_y), len(data.test_y)) == (10, 20)
    assert float(data.train_x.min()) >= 0.0 and float(data.train_x.max()) <= 1.0
    full = load_site(
        MEDMNIST_DIR / "pneumoniamnist.npz",
        DataConfig(image_size=28, class_names="normal,pneumonia"),
        "p",
    )
    assert (len(full.train_y), len(full.val_y), len(full.test_y)) == (4708, 524, 624)
    assert int(full.train_y.sum()) == 3494


def test_medmnist_rgb_and_label_range_checks() -> None:
    five = DataConfig(image_size=28, channels=3, class_names="0,1,2,3,4")
    data = load_site(MEDMNIST_DIR / "retinamnist.npz", five, "retina")
    assert data.train_x.shape == (1080, 3, 28, 28)

    with pytest.raises(SiteDataError, match="labels up to 4"):
        load_site(MEDMNIST_DIR / "retinamnist.npz", DataConfig(image_size=28), "retina")
