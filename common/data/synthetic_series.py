"""Synthetic series hospitals: CT-like DICOM series where only the sequence tells the class.

``data.synthetic-kind = "series"`` makes each synthetic study a *series*: ``data.synthetic-
slices`` single-frame CT files sharing one StudyInstanceUID and SeriesInstanceUID, each with
its InstanceNumber, ImagePositionPatient and ImageOrientationPatient (axial, 2.5 mm apart),
in their own folder named by one ``labels.csv`` row (label 0 or 1: set
``data.class-names = "normal,lesion"``), so ``common.data.volumes`` groups them
into one ordered sample (``frames = "stack"``) or takes their middle slice (``"middle"``).

Every slice shows a soft body outline, a smooth texture (shared by the series, slowly
varying) and noise. Both classes have bright round blobs of the same size and contrast:
- class 0 ("normal"): *noise blobs* that do not persist: a slice has one (at a new random
  place) with probability ``NOISE_RATE`` unless the slice before had one, so about a third
  of the slices show a blob and never two in a row;
- class 1 ("lesion"): one lesion that *persists*: the same place in 5 or 6 consecutive
  slices, anywhere in the series; the slices not next to it have noise blobs as above.
So a single slice is only weakly informative: every blob looks alike, and the middle slice
shows one in most lesion series but also in a third of the normal ones (a perfect blob
detector on the middle slice of 10 reaches AUC ~0.78), while two or more consecutive
slices with a blob is the lesion (AUC 1.0 before label noise). Labels are flipped for
``LABEL_NOISE`` of the studies, as for the 2D hospitals; the class balance, noise and
contrast follow the site's style (``common.data.synthetic.site_style``). Deterministic
from ``(seed, site)``. No real patient data: names and IDs are fake.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from common.data.synthetic import LABEL_NOISE, SiteStyle, _smooth_noise, site_style
from common.files import staged_directory, write_csv
from common.naming import site_name

SERIES_CLASS_NAMES = "normal,lesion"  # labels.csv holds class indices; name them so
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
NOISE_RATE = 0.5  # chance of a noise blob on a slice that follows one without
LESION_SLICES = (5, 6)  # consecutive slices a lesion spans
SLICE_SPACING = 2.5  # mm between slice positions
MAX_STORED = 2000  # stored value of density 1 (CT-like: modality value = stored - 1024)


def synthesize_series(
    rng: np.random.Generator, slices: int, size: int, lesion: bool, style: SiteStyle
) -> np.ndarray:
    """(slices, size, size) densities in [0, 1] of one series, with or without a lesion."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    body = np.exp(-(((xx - 0.5) / 0.44) ** 6 + ((yy - 0.5) / 0.40) ** 6))
    texture = _smooth_noise(rng, size, 6)
    blobs = _blob_slices(rng, slices, lesion)
    volume = np.empty((slices, size, size), dtype=np.float32)
    lesion_at = _blob_centre(rng)
    for index in range(slices):
        texture = 0.85 * texture + 0.15 * _smooth_noise(rng, size, 6)  # slowly varying
        density = 0.35 * body + 0.05 * texture * body
        kind = blobs[index]
        if kind:
            cx, cy = lesion_at if kind == 2 else _blob_centre(rng)
            radius = rng.uniform(0.1, 0.14)
            amplitude = rng.uniform(0.5, 0.65)
            density += amplitude * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * radius**2))
        signal = np.clip(0.5 + (density - 0.5) * style.contrast, 0, 1)
        volume[index] = np.clip(signal + rng.normal(0, style.noise, signal.shape), 0, 1)
    return volume


def _blob_centre(rng: np.random.Generator) -> tuple[float, float]:
    return float(rng.uniform(0.25, 0.75)), float(rng.uniform(0.25, 0.75))


def _blob_slices(rng: np.random.Generator, slices: int, lesion: bool) -> list[int]:
    """Per slice: 0 nothing, 1 a noise blob, 2 the lesion (a run of 5-6 consecutive slices)."""
    kinds = [0] * slices
    if lesion:
        length = min(slices, int(rng.choice(LESION_SLICES)))
        start = int(rng.integers(0, slices - length + 1))
        kinds[start : start + length] = [2] * length
    previous = False  # whether the slice before had a noise blob
    for index in range(slices):
        if kinds[index] == 2:
            continue
        next_to_lesion = any(0 <= j < slices and kinds[j] == 2 for j in (index - 1, index + 1))
        if not previous and not next_to_lesion and rng.random() < NOISE_RATE:
            kinds[index] = 1
        previous = kinds[index] == 1
    return kinds


def _write_slice(
    path: Path, stored: np.ndarray, study: dict[str, str], index: int, slices: int
) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    for keyword, value in study.items():
        setattr(ds, keyword, value)
    ds.Modality = "CT"
    ds.BodyPartExamined = "CHEST"
    ds.InstanceNumber = index + 1
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    # head first: the first instance is the highest slice (readers sort by position)
    ds.ImagePositionPatient = [0.0, 0.0, float(SLICE_SPACING * (slices - index))]
    ds.SliceThickness = SLICE_SPACING
    ds.PixelSpacing = [1.0, 1.0]
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope = "1"
    ds.RescaleIntercept = "-1024"
    ds.RescaleType = "HU"
    # one fixed window for the whole series, so every slice is scaled alike
    ds.WindowCenter = f"{MAX_STORED / 2 - 1024:g}"
    ds.WindowWidth = f"{MAX_STORED:g}"
    ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)


def _study_tags(style: SiteStyle, rng: np.random.Generator, idx: int) -> dict[str, str]:
    return {
        "StudyInstanceUID": generate_uid(),
        "SeriesInstanceUID": generate_uid(),
        "FrameOfReferenceUID": generate_uid(),
        "PatientName": f"SYNTHETIC^{style.name.upper()}^{idx:05d}",
        "PatientID": f"S{style.name[-1].upper()}{idx:06d}",
        "PatientSex": "F" if rng.random() < 0.5 else "M",
        "PatientAge": f"{int(rng.integers(18, 90)):03d}Y",
        "StudyDate": f"2021{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}",
        "InstitutionName": f"Synthetic {style.name}",
    }


def generate_series_site(
    directory: Path,
    index: int,
    *,
    seed: int,
    num_series: int,
    slices: int,
    image_size: int,
    test_fraction: float = 0.25,
    on_series: Callable[[], None] | None = None,
) -> Path:
    """Write synthetic series site ``index`` into ``directory`` (atomically) and return it.

    One folder per series; ``labels.csv`` lists ``path,label,split`` per series folder.
    """
    style = site_style(index)
    rng = np.random.default_rng([seed, index, 1])
    with staged_directory(directory) as staging:
        rows = []
        labels = (rng.random(num_series) < style.positive_fraction).astype(int)
        test = rng.random(num_series) < test_fraction
        for i, true_label in enumerate(labels):
            volume = synthesize_series(rng, slices, image_size, bool(true_label), style)
            recorded = true_label if rng.random() >= LABEL_NOISE else 1 - true_label
            folder = staging / f"series_{i:05d}"
            folder.mkdir()
            study = _study_tags(style, rng, i)
            stored = np.rint(volume * MAX_STORED).astype(np.uint16)
            for s in range(slices):
                _write_slice(folder / f"slice_{s + 1:03d}.dcm", stored[s], study, s, slices)
            rows.append((folder.name, int(recorded), "test" if test[i] else "train"))
            if on_series is not None:
                on_series()
        write_csv(staging / "labels.csv", ["path", "label", "split"], rows)
    return directory


def ensure_series_site(
    root: Path,
    index: int,
    *,
    seed: int,
    num_series: int,
    slices: int,
    image_size: int,
    test_fraction: float = 0.25,
    on_series: Callable[[], None] | None = None,
) -> Path:
    """Folder of synthetic series site ``index`` under ``root``, generated on first use.

    As for the 2D hospitals, the folder name encodes every generation parameter.
    """
    variant = f"series-seed{seed}-n{num_series}-s{slices}-px{image_size}-test{test_fraction:g}"
    directory = root.expanduser() / variant / site_name(index)
    if not (directory / "labels.csv").exists():
        generate_series_site(
            directory,
            index,
            seed=seed,
            num_series=num_series,
            slices=slices,
            image_size=image_size,
            test_fraction=test_fraction,
            on_series=on_series,
        )
    return directory
