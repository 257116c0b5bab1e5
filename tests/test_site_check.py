"""``medfed site check``: readiness report, PHI summary without values, exit codes, --json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.data.synthetic import generate_site
from medfed.cli import main
from tests.messy_site import PROBLEMS, build_messy_site
from tests.shared_data import MEDMNIST_DIR


@pytest.fixture
def demo_hospital(tmp_path: Path) -> Path:
    return generate_site(tmp_path / "hospital-b", 1, seed=0, num_images=30, image_size=48)


def test_a_demo_hospital_is_ready(demo_hospital: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["site", "check", str(demo_hospital), "--json"])

    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["ready"] is True
    assert report["site_id"] == "hospital-b"
    total = sum(sum(c.values()) for c in report["counts"].values())
    assert total == 30
    assert report["modalities"] == {"CR": 30}
    assert report["photometric"] == {"MONOCHROME1": 30}
    assert report["transfer_syntaxes"] == {"Explicit VR Little Endian": 30}
    assert report["sizes"] == {"48x48": 30}
    assert report["phi_tags"]["PatientName"] == 30
    assert report["phi_tags"]["InstitutionName"] == 30
    assert "never leave the site" in report["phi_note"]


def test_text_report_names_phi_tags_but_never_their_values(
    demo_hospital: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["site", "check", str(demo_hospital)])

    out = capsys.readouterr().out
    assert code == 0
    assert "READY" in out and "PatientName" in out and "StudyDate" in out
    assert "SYNTHETIC" not in out and "Synthetic hospital" not in out


def test_a_messy_folder_lists_every_problem_and_is_not_ready_when_too_small(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    messy = build_messy_site(tmp_path / "messy")

    code = main(["site", "check", str(messy), "--json", "--min-images", "10"])

    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["ready"] is False
    skipped = {item["path"]: item["reason"] for item in report["skipped"]}
    for path, word in PROBLEMS.items():
        assert word in skipped[path]
    assert report["counts"]["normal"]["train"] == 2 and report["counts"]["opacity"]["train"] == 2
    assert any("at least 10" in problem for problem in report["problems"])
    assert main(["site", "check", str(messy), "--min-images", "4"]) == 0


def test_a_missing_class_makes_the_site_not_ready(
    demo_hospital: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["site", "check", str(demo_hospital), "--classes", "normal,opacity,nodule"])

    out = capsys.readouterr().out
    assert code == 1
    assert "NOT READY" in out and "nodule" in out


def test_a_missing_folder_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["site", "check", str(tmp_path / "nowhere")])

    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("medfed: error: site 'nowhere'") and "\n" not in err


def test_a_medmnist_file_can_be_checked(capsys: pytest.CaptureFixture[str]) -> None:
    path = MEDMNIST_DIR / "breastmnist.npz"

    code = main(["site", "check", str(path), "--json", "--classes", "malignant,benign"])

    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["counts"]["malignant"] == {"train": 147, "val": 21, "test": 42}
