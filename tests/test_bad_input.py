"""Bad hospital folders give one clear line naming the site and the file, not a traceback."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from common.config import DataConfig
from common.data.sites import load_site
from common.errors import SiteDataError
from medfed.testing.timing import scaled


def _site_check(path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "medfed", "site", "check", str(path), *flags],
        capture_output=True,
        text=True,
        timeout=scaled(120),
        check=False,
    )


@pytest.fixture
def site_copy(small_site: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(small_site, tmp_path / "hospital-x"))


def test_empty_folder_is_one_line_error_naming_the_site(tmp_path: Path) -> None:
    empty = tmp_path / "hospital-empty"
    empty.mkdir()

    result = _site_check(empty)

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "hospital-empty" in line and "no labelled images" in line


def test_labels_naming_a_missing_file(site_copy: Path) -> None:
    with open(site_copy / "labels.csv", "a") as handle:
        handle.write("ghost_scan.dcm,opacity,train\n")

    result = _site_check(site_copy, "--strict", "--no-cache")

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "hospital-x" in line and "ghost_scan.dcm" in line and "not found" in line


def test_non_dicom_file_in_the_folder(site_copy: Path) -> None:
    (site_copy / "notes.dcm").write_text("this is a radiology note, not an image")
    with open(site_copy / "labels.csv", "a") as handle:
        handle.write("notes.dcm,normal,train\n")

    result = _site_check(site_copy, "--strict", "--no-cache")

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "hospital-x" in line and "notes.dcm" in line and "not a DICOM file" in line


def test_without_strict_the_check_lists_each_bad_file_and_the_site_stays_usable(
    site_copy: Path,
) -> None:
    (site_copy / "notes.dcm").write_text("not an image")
    with open(site_copy / "labels.csv", "a") as handle:
        handle.write("notes.dcm,normal,train\nghost_scan.dcm,opacity,train\n")

    result = _site_check(site_copy, "--no-cache")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "notes.dcm: not a DICOM file" in result.stdout
    assert "ghost_scan.dcm" in result.stdout and "READY" in result.stdout


def test_strict_loading_stops_at_the_bad_file_with_its_name(site_copy: Path) -> None:
    (site_copy / "notes.dcm").write_text("not an image")
    with open(site_copy / "labels.csv", "a") as handle:
        handle.write("notes.dcm,normal,train\n")

    with pytest.raises(SiteDataError) as excinfo:
        load_site(site_copy, DataConfig(image_size=32, strict=True), "hospital-x")

    assert str(excinfo.value).startswith("site 'hospital-x': ")
    assert "notes.dcm: not a DICOM file" in str(excinfo.value)


def test_lenient_loading_skips_the_bad_file_and_keeps_the_rest(site_copy: Path) -> None:
    (site_copy / "notes.dcm").write_text("not an image")
    with open(site_copy / "labels.csv", "a") as handle:
        handle.write("notes.dcm,normal,train\n")

    data = load_site(site_copy, DataConfig(image_size=32), "hospital-x")

    assert [s.path.name for s in data.skipped] == ["notes.dcm"]
    assert len(data.train_y) + len(data.test_y) == 48
