"""Build a messy hospital export from the real sample files (for ingest and site-check tests)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import MPEG2MPML, BasicTextSRStorage, ExplicitVRLittleEndian, generate_uid

from tests.shared_data import dicom_file

GOOD = {
    "good/dx.dcm": ("dx_thorax_small_mono1_canine.dcm", "normal"),
    "good/mr.dcm": ("mr_prostate_tcia_explicit_le.dcm", "opacity"),
    "good/ct.dcm": ("ct_j2k_lossless.dcm", "normal"),
    "good/rle.dcm": ("mr_enhanced_10frame_rle.dcm", "opacity"),
}
# file (or labels.csv row) -> a word the skip reason must contain
PROBLEMS = {
    "bad/truncated.dcm": "truncated",
    "bad/notes.dcm": "not a DICOM file",
    "bad/report_sr.dcm": "no pixel data",
    "bad/mpeg2.dcm": "unsupported transfer syntax",
    "bad/zero.dcm": "zero-size",
    "bad/channels.dcm": "inconsistent channel count",
    "bad/no_label.dcm": "missing label",
    "bad/unknown_label.dcm": "unknown label",
    "bad/missing.dcm": "not found",
    "bad/copy_of_dx.dcm": "duplicate",
}


def build_messy_site(root: Path) -> Path:
    """A ``labels.csv`` site: 4 good files (both classes, all train) plus one of each problem."""
    for relative, (source, _) in GOOD.items():
        _copy(dicom_file(source), root / relative)
    bad = root / "bad"
    bad.mkdir(parents=True, exist_ok=True)
    source = dicom_file("ct_series_3slice/01.dcm").read_bytes()
    (bad / "truncated.dcm").write_bytes(source[: len(source) // 2])
    (bad / "notes.dcm").write_text("Patient transferred; see paper chart.\n")
    _write_sr(bad / "report_sr.dcm")
    _retag(dicom_file("us_multiframe_jpeg_baseline_ybr.dcm"), bad / "mpeg2.dcm", syntax=MPEG2MPML)
    _retag(dicom_file("dx_thorax_small_mono1_canine.dcm"), bad / "zero.dcm", Rows=0)
    _retag(dicom_file("mr_prostate_tcia_explicit_le.dcm"), bad / "channels.dcm", SamplesPerPixel=3)
    _copy(dicom_file("ct_jpegls_near_lossless.dcm"), bad / "no_label.dcm")
    _copy(dicom_file("nm_jpeg_lossless_sv1.dcm"), bad / "unknown_label.dcm")
    _copy(dicom_file("dx_thorax_small_mono1_canine.dcm"), bad / "copy_of_dx.dcm")
    rows = [(path, label, "train") for path, (_, label) in GOOD.items()]
    # the copy keeps its original's label: a copy under another label skips both (conflict)
    rows += [(path, "normal" if "copy" in path else "opacity", "train") for path in PROBLEMS]
    labels = {"bad/no_label.dcm": "", "bad/unknown_label.dcm": "fracture"}
    rows = [(path, labels.get(path, label), split) for path, label, split in rows]
    with open(root / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        writer.writerows(rows)
    return root


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, target)


def _retag(source: Path, target: Path, syntax: str | None = None, **values: int) -> None:
    ds = pydicom.dcmread(source)
    if syntax is not None:
        ds.file_meta.TransferSyntaxUID = syntax
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    target.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(target, enforce_file_format=True)


def _write_sr(path: Path) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = BasicTextSRStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = BasicTextSRStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "SR"
    ds.PatientName = "DOE^JANE"
    ds.ValueType = "CONTAINER"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
