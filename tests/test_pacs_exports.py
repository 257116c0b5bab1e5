"""Real PACS exports (issue 17): odd names, locale decimals, read-only folders, every file
accounted for. The corpus is built at test time from pydicom's own test files."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag
from pydicom.uid import generate_uid

from common.config import DataConfig
from common.data import cache as cache_module
from common.data.dicom import open_dicom
from common.data.ingest import ingest_site
from common.data.manifest import LABELS_FILE
from medfed.cli import main
from tests.shared_data import DICOM_DIR

CONFIG = DataConfig(image_size=16, test_fraction=0.0)


def _variant(source: str, target: Path, **raw_ds: str) -> Path:
    """A copy of a pydicom test file with fresh UIDs (distinct content); ``raw_ds`` are DS
    values written verbatim (e.g. comma decimals pydicom itself would refuse to write)."""
    ds = pydicom.dcmread(get_testdata_file(source))
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    for keyword, text in raw_ds.items():
        tag = Tag(keyword)
        value = text.encode() + (b" " if len(text) % 2 else b"")
        ds[tag] = RawDataElement(tag, "DS", len(value), value, 0, False, True)
    target.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(target)
    return target


def _class_site(root: Path) -> Path:
    _variant("MR_small.dcm", root / "normal" / "mr.dcm")
    _variant("CT_small.dcm", root / "opacity" / "ct.dcm")
    return root


def _check(site: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = main(["site", "check", str(site), "--min-images", "1", *extra])
    return code, capsys.readouterr().out


# -- it crashed on ------------------------------------------------------------------------
def test_a_file_name_that_is_not_utf8_is_used_and_printed_safely(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    site = _class_site(tmp_path / "site")
    bad = os.path.join(os.fsencode(site / "normal"), b"bad-\xff.dcm")
    _variant("MR_small.dcm", Path(os.fsdecode(bad)))
    (site / "normal" / os.fsdecode(b"junk-\xfe.dcm")).write_text("not an image")

    code, out = _check(site, capsys, "--json")

    report = json.loads(out)
    assert code in (0, 1) and report["files_used"] == 3
    assert report["skipped"] == [{"path": "normal/junk-\\xfe.dcm", "reason": "not a DICOM file"}]
    code, out = _check(site, capsys)
    assert code in (0, 1) and "normal/junk-\\xfe.dcm: not a DICOM file" in out


def test_folder_names_with_rich_markup_are_printed_verbatim(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    site = _class_site(tmp_path / "export [/old]")  # a path with markup: "[/old]"
    (site / "[red]").mkdir()
    (site / "[red]" / "x.dcm").write_text("not an image")

    code, out = _check(site, capsys, "--site-id", "[bold]b")

    assert code in (0, 1)
    assert f"Site '[bold]b': {site} (layout" in out
    assert "[red]: folder '[red]' is not a class" in out


def test_comma_decimals_in_ds_values_are_read_as_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "site"
    _variant("MR_small.dcm", site / "normal" / "mr.dcm")
    comma = _variant(
        "CT_small.dcm",
        site / "opacity" / "ct.dcm",
        RescaleSlope="1,5",
        ImagePositionPatient="-158,135803\\-179,035803\\-75,699997",
    )
    _variant("CT_small.dcm", site / "opacity" / "ct2.dcm", RescaleIntercept="abc")

    ds = open_dicom(comma)
    assert float(ds.RescaleSlope) == 1.5
    assert [float(v) for v in ds.ImagePositionPatient] == pytest.approx(
        [-158.135803, -179.035803, -75.699997]
    )
    code, out = _check(site, capsys, "--json")

    report = json.loads(out)
    assert code in (0, 1) and report["files_used"] == 2
    [skipped] = report["skipped"]
    assert skipped["path"] == "opacity/ct2.dcm"
    assert "RescaleIntercept" in skipped["reason"] and "abc" not in skipped["reason"]


def test_an_unwritable_cache_is_reported_and_the_check_completes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    site = _class_site(tmp_path / "site")

    def denied(*_: object, **__: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    # tests run as root, who ignores file modes: make every cache write fail instead
    monkeypatch.setattr(cache_module, "_write_json", denied)
    monkeypatch.setattr(cache_module, "_atomic_save", denied)

    code, out = _check(site, capsys, "--json")

    report = json.loads(out)
    assert code in (0, 1) and report["files_used"] == 2
    [warning] = [w for w in report["warnings"] if "cache" in w]
    assert "Permission denied" in warning and "\n" not in warning


# -- every file accounted for ---------------------------------------------------------------
def _walk(root: Path) -> list[Path]:
    """Files and symlinks under ``root`` as a plain walk sees them (site metadata left out)."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            path = Path(folder, name)
            if not name.startswith(".") and path != root / LABELS_FILE:
                found.append(path)
    return found


def test_every_path_under_the_site_is_used_or_skipped_with_a_reason(tmp_path: Path) -> None:
    site = _class_site(tmp_path / "site")
    shutil.copy(get_testdata_file("DICOMDIR"), site / "DICOMDIR")
    _variant("MR_small.dcm", site / "stray.dcm")
    (site / "normal" / "dangling.dcm").symlink_to(site / "normal" / "gone.dcm")
    (site / "opacity" / "loop_a").symlink_to(site / "opacity" / "loop_b")
    (site / "opacity" / "loop_b").symlink_to(site / "opacity" / "loop_a")
    (site / "normal" / "notes.txt").write_text("see chart")
    _variant("MR_small.dcm", site / "misc" / "other.dcm")

    ingest = ingest_site(site, CONFIG, "site")

    used = {m.entry.path for s in ingest.samples for m in s.members}
    skipped = {s.path: s.reason for s in ingest.skipped}
    assert not used & set(skipped)
    for path in _walk(site):
        assert any(p in used or p in skipped for p in (path, *path.parents)), path
    assert len(used) == 2
    assert "not in a class folder" in skipped[site / "stray.dcm"]
    assert "DICOMDIR" in skipped[site / "DICOMDIR"]
    assert "broken symbolic link" in skipped[site / "normal" / "dangling.dcm"]
    assert "symbolic link loop" in skipped[site / "opacity" / "loop_a"]
    assert "not an image" in skipped[site / "normal" / "notes.txt"]


def test_an_unreadable_folder_is_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = _class_site(tmp_path / "site")
    locked = site / "normal" / "locked"
    _variant("MR_small.dcm", locked / "x.dcm")
    real_scandir = os.scandir

    def scandir(path: object = ".") -> object:
        if os.fspath(path) == str(locked):  # as root, chmod 000 would not stop us
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", scandir)

    ingest = ingest_site(site, CONFIG, "site")

    skipped = {s.path: s.reason for s in ingest.skipped}
    assert skipped[locked] == "cannot read folder (Permission denied)"
    assert len(ingest.samples) == 2


def test_files_not_listed_in_labels_csv_are_reported(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _variant("MR_small.dcm", site / "a.dcm")
    _variant("CT_small.dcm", site / "b.dcm")
    _variant("CT_small.dcm", site / "extra" / "c.dcm")
    (site / LABELS_FILE).write_text("path,label\na.dcm,normal\nb.dcm,opacity\n")

    ingest = ingest_site(site, CONFIG, "site")

    skipped = {s.path: s.reason for s in ingest.skipped}
    assert skipped == {site / "extra" / "c.dcm": "not listed in labels.csv"}


# -- wrong reasons ---------------------------------------------------------------------------
def test_a_truncated_image_and_a_structure_set_without_preamble_get_true_reasons(
    tmp_path: Path,
) -> None:
    site = _class_site(tmp_path / "site")
    for name in ("CT_small.dcm", "MR_small.dcm"):
        data = Path(get_testdata_file(name)).read_bytes()
        (site / "opacity" / f"half-{name}").write_bytes(data[: len(data) // 2])
        before_pixels = data[: data.rindex(b"\xe0\x7f\x10\x00")]  # cut at (7FE0,0010)
        (site / "opacity" / f"headers-{name}").write_bytes(before_pixels)
    shutil.copy(get_testdata_file("rtstruct.dcm"), site / "normal" / "rtstruct")
    assert Path(get_testdata_file("rtstruct.dcm")).read_bytes()[128:132] != b"DICM"

    ingest = ingest_site(site, CONFIG, "site")

    reasons = {s.path.name: s.reason for s in ingest.skipped}
    assert "truncated pixel data" in reasons["half-CT_small.dcm"]
    assert "truncated pixel data" in reasons["half-MR_small.dcm"]
    assert "truncated" in reasons["headers-CT_small.dcm"]
    assert "truncated" in reasons["headers-MR_small.dcm"]
    assert reasons["rtstruct"] == "no pixel data (RT Structure Set Storage)"


@pytest.mark.parametrize(
    "name",
    ["JPEG2000.dcm", "SC_rgb_rle.dcm", "JPEG-lossy.dcm", "MR_small_jpeg_ls_lossless.dcm"],
)
def test_compressed_pixel_data_cut_short_is_named_truncated(tmp_path: Path, name: str) -> None:
    site = _class_site(tmp_path / "site")
    data = Path(get_testdata_file(name)).read_bytes()
    (site / "opacity" / f"cut-{name}").write_bytes(data[: int(len(data) * 0.9)])

    ingest = ingest_site(site, CONFIG, "site")

    reasons = {s.path.name: s.reason for s in ingest.skipped}
    assert "truncated pixel data" in reasons[f"cut-{name}"]


def test_side_files_are_listed_but_never_stop_a_strict_load(tmp_path: Path) -> None:
    site = _class_site(tmp_path / "site")
    (site / "normal" / "README.txt").write_text("exported 2024")

    ingest = ingest_site(site, DataConfig(image_size=16, test_fraction=0.0, strict=True), "s")

    assert [(s.path.name, s.reason) for s in ingest.skipped] == [
        ("README.txt", "not an image (.txt side file)")
    ]


# -- intact images lost ----------------------------------------------------------------------
def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_an_intact_slice_is_kept_next_to_its_truncated_copy(tmp_path: Path) -> None:
    site = _class_site(tmp_path / "site")
    intact = _variant("MR_small.dcm", site / "opacity" / "mr.dcm")
    shutil.copy(intact, site / "opacity" / "mr-copy.dcm")
    _truncate(site / "opacity" / "mr-copy.dcm")

    ingest = ingest_site(site, CONFIG, "site")

    used = {m.entry.path for s in ingest.samples for m in s.members}
    skipped = {s.path: s.reason for s in ingest.skipped}
    assert intact in used and len(used) == 3
    assert list(skipped) == [site / "opacity" / "mr-copy.dcm"]
    assert "truncated pixel data" in skipped[site / "opacity" / "mr-copy.dcm"]


@pytest.mark.parametrize("frames", ["middle", "stack", "all"])
@pytest.mark.parametrize("cut", ["01.dcm", "02.dcm"])
def test_one_truncated_slice_costs_only_itself(tmp_path: Path, frames: str, cut: str) -> None:
    site = tmp_path / "site"
    shutil.copytree(DICOM_DIR / "ct_series_3slice", site / "opacity" / "series")
    _variant("MR_small.dcm", site / "normal" / "mr.dcm")
    _truncate(site / "opacity" / "series" / cut)
    config = DataConfig(image_size=16, test_fraction=0.0, frames=frames, stack_depth=4)

    ingest = ingest_site(site, config, "site")

    skipped = {s.path.name: s.reason for s in ingest.skipped}
    assert list(skipped) == [cut] and "truncated pixel data" in skipped[cut]
    series = [s for s in ingest.samples if s.label == 1]
    assert len(series) == 1 and len(series[0].members) == 2
    assert cut not in {m.entry.path.name for m in series[0].members}
    assert len(ingest.images["train"]) == (3 if frames == "all" else 2)


# -- wrongly labelled ------------------------------------------------------------------------
@pytest.mark.parametrize("copy", ["same bytes", "same uid", "same uid, no position"])
def test_the_same_image_under_two_labels_is_skipped_naming_both(tmp_path: Path, copy: str) -> None:
    site = _class_site(tmp_path / "site")
    first = _variant("MR_small.dcm", site / "normal" / "x.dcm")
    ds = pydicom.dcmread(first)
    if copy.endswith("no position"):  # a projection-like image: it was used twice
        del ds.ImagePositionPatient
        ds.save_as(first)
    if copy != "same bytes":  # same SOPInstanceUID, different bytes (e.g. re-exported)
        ds.InstitutionName = "re-export"
    (site / "opacity" / "x.dcm").parent.mkdir(exist_ok=True)
    ds.save_as(site / "opacity" / "x.dcm")

    ingest = ingest_site(site, CONFIG, "site")

    used = {m.entry.path.relative_to(site).as_posix() for s in ingest.samples for m in s.members}
    skipped = {s.path.relative_to(site).as_posix(): s.reason for s in ingest.skipped}
    assert used == {"normal/mr.dcm", "opacity/ct.dcm"}
    assert skipped == {
        "normal/x.dcm": "same image as opacity/x.dcm under another label (normal vs opacity)",
        "opacity/x.dcm": "same image as normal/x.dcm under another label (opacity vs normal)",
    }


@pytest.mark.parametrize("same_bytes", [True, False])
def test_the_same_image_twice_under_one_label_is_used_once(
    tmp_path: Path, same_bytes: bool
) -> None:
    site = _class_site(tmp_path / "site")
    first = _variant("MR_small.dcm", site / "normal" / "a.dcm")
    ds = pydicom.dcmread(first)
    if not same_bytes:
        ds.InstitutionName = "re-export"
    ds.save_as(site / "normal" / "b.dcm")

    ingest = ingest_site(site, CONFIG, "site")

    used = {m.entry.path.name for s in ingest.samples for m in s.members}
    skipped = {s.path.name: s.reason for s in ingest.skipped}
    assert used == {"a.dcm", "mr.dcm", "ct.dcm"}
    assert list(skipped) == ["b.dcm"]
    assert (
        skipped["b.dcm"].startswith("same ") and "as normal/a.dcm (duplicate)" in skipped["b.dcm"]
    )


# -- slice-level labels ----------------------------------------------------------------------
def _series_site(root: Path, rows: str) -> Path:
    shutil.copytree(DICOM_DIR / "ct_series_3slice", root / "series")
    _variant("MR_small.dcm", root / "mr.dcm")
    (root / LABELS_FILE).write_text("path,label\nmr.dcm,normal\n" + rows)
    return root


def test_files_named_in_labels_csv_are_samples_of_their_own(tmp_path: Path) -> None:
    site = _series_site(
        tmp_path / "site",
        "series/01.dcm,normal\nseries/02.dcm,opacity\nseries/03.dcm,normal\n",
    )
    config = DataConfig(image_size=16, test_fraction=0.5)

    ingest = ingest_site(site, config, "site")

    assert ingest.skipped == []
    slices = {s.members[0].entry.path.name: s for s in ingest.samples if len(s.members) == 1}
    assert {name: s.label for name, s in slices.items()} == {
        "mr.dcm": 0,
        "01.dcm": 0,
        "02.dcm": 1,
        "03.dcm": 0,
    }
    assert len({slices[n].split for n in ("01.dcm", "02.dcm", "03.dcm")}) == 1  # no leak


def test_a_folder_row_or_stack_mode_groups_the_series(tmp_path: Path) -> None:
    folder = _series_site(tmp_path / "folder", "series,opacity\n")
    stack = DataConfig(image_size=16, test_fraction=0.0, frames="stack", stack_depth=4)
    named = _series_site(
        tmp_path / "named", "series/01.dcm,opacity\nseries/02.dcm,opacity\nseries/03.dcm,normal\n"
    )

    by_folder = ingest_site(folder, CONFIG, "a")
    by_stack = ingest_site(named, stack, "b")

    assert [len(s.members) for s in by_folder.samples] == [1, 3] and by_folder.skipped == []
    assert [len(s.members) for s in by_stack.samples] == [1]
    assert {s.reason for s in by_stack.skipped} == {
        "files of one series (3 files) have different labels"
    }
