"""Synthetic hospitals: chest-X-ray-like images written as real DICOM files with pydicom.

Class 0 ("normal") and class 1 ("opacity": one or two faint, diffuse blobs inside a lung
field) share the same anatomy, rib shadows and correlated background texture, so the task is
learnable but not trivial; a few labels are flipped (reader disagreement), so even a perfect
model cannot reach AUC 1.0. With ``clinical`` (``data.synthetic-kind = "clinical"``) the label also
depends on the patient: "opacity" iff the image shows the lesion AND the patient is at least
``CLINICAL_AGE_CUTOFF`` years old, so an image-only model cannot tell a young patient's lesion
from an old one's and a fusion model can. Age is written as PatientAge, or only as
PatientBirthDate (the reader derives it), or not at all (missing); ``labels.csv`` gets two
noise columns, ``smoker`` (categorical) and ``bmi`` (numeric), both with missing values.
Each site has its own acquisition style (intensity scale, noise,
MONOCHROME1 vs MONOCHROME2, Rescale Slope/Intercept) and class balance, which the reader in
``common.data.dicom`` must undo. Everything is deterministic from ``(seed, site index)``.
No real patient data: names and IDs are fake.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from common.config import DataConfig
from common.files import staged_directory, write_csv
from common.naming import site_name

LABEL_NAMES = ("normal", "opacity")
LABEL_NOISE = 0.03
CLINICAL_AGE_CUTOFF = 60.0
CLINICAL_COLUMNS = ("smoker", "bmi")  # extra labels.csv columns of a clinical site
_SMOKER = ("never", "former", "current")
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"


@dataclass(frozen=True)
class SiteStyle:
    """How one hospital acquires and stores its images."""

    name: str
    positive_fraction: float
    photometric: str = "MONOCHROME2"
    max_stored: int = 4095
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    noise: float = 0.03
    contrast: float = 1.0


_BASE_STYLES = (
    SiteStyle("hospital-a", positive_fraction=0.35, noise=0.025, contrast=1.0),
    SiteStyle("hospital-b", positive_fraction=0.5, photometric="MONOCHROME1", noise=0.04),
    SiteStyle(
        "hospital-c",
        positive_fraction=0.25,
        rescale_slope=0.5,
        rescale_intercept=-1024.0,
        noise=0.035,
        contrast=0.85,
    ),
)


def site_style(index: int) -> SiteStyle:
    """The acquisition style of synthetic site ``index`` (cycles through three styles)."""
    base = _BASE_STYLES[index % len(_BASE_STYLES)]
    if index < len(_BASE_STYLES):
        return base
    rng = np.random.default_rng(index)
    return SiteStyle(
        name=site_name(index),
        positive_fraction=float(rng.uniform(0.2, 0.6)),
        photometric=base.photometric,
        rescale_slope=base.rescale_slope,
        rescale_intercept=base.rescale_intercept,
        noise=float(rng.uniform(0.02, 0.045)),
        contrast=float(rng.uniform(0.8, 1.1)),
    )


def _smooth_noise(rng: np.random.Generator, size: int, scale: int) -> np.ndarray:
    coarse = torch.from_numpy(rng.standard_normal((1, 1, scale, scale)).astype(np.float32))
    fine = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    return fine[0, 0].numpy()


def synthesize_density(rng: np.random.Generator, size: int, opacity: bool) -> np.ndarray:
    """One chest-like density map in [0, 1] (bright = dense), with or without opacity."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    body = np.exp(-(((xx - 0.5) / 0.42) ** 8 + ((yy - 0.52) / 0.46) ** 8))
    density = 0.55 * body
    lungs = []
    for cx in (0.32, 0.68):
        cx_j = cx + rng.normal(0, 0.015)
        lung = np.exp(-(((xx - cx_j) / 0.15) ** 4 + ((yy - 0.48) / 0.28) ** 4))
        lungs.append((cx_j, lung))
        density -= 0.35 * lung
    ribs = 0.05 * np.maximum(np.sin((yy * 22 + 3 * (xx - 0.5) ** 2) * np.pi), 0) ** 3
    density += ribs * body
    density += 0.03 * _smooth_noise(rng, size, 8) + 0.015 * _smooth_noise(rng, size, 24)
    if opacity:
        cx, lung = lungs[rng.integers(0, 2)]
        density += rng.uniform(0.12, 0.2) * lung  # diffuse haze over the affected lung
        for _ in range(rng.integers(1, 3)):
            bx = cx + rng.normal(0, 0.05)
            by = 0.48 + rng.normal(0, 0.12)
            radius = rng.uniform(0.07, 0.13)
            amplitude = rng.uniform(0.3, 0.5)
            blob = np.exp(-((xx - bx) ** 2 + (yy - by) ** 2) / (2 * radius**2))
            density += amplitude * blob * lung
    return np.clip(density, 0.0, 1.0)


def _acquire(density: np.ndarray, style: SiteStyle, rng: np.random.Generator) -> np.ndarray:
    """Density -> stored DICOM values following the site's acquisition style."""
    signal = np.clip(0.5 + (density - 0.5) * style.contrast, 0, 1)
    signal = signal + rng.normal(0, style.noise, size=signal.shape)
    modality_values = np.clip(signal, 0, 1) * style.max_stored
    if style.photometric == "MONOCHROME1":
        modality_values = style.max_stored - modality_values
    # Modality value = stored * slope + intercept, so invert that to get stored values.
    stored = (modality_values - style.rescale_intercept) / style.rescale_slope
    return np.clip(np.rint(stored), 0, 65535).astype(np.uint16)


def _write_dicom(
    path: Path,
    stored: np.ndarray,
    style: SiteStyle,
    rng: np.random.Generator,
    idx: int,
    age: tuple[float, str] | None = None,
) -> None:
    """Write one image; ``age``: (years, how) with how ``tag`` (PatientAge), ``birth``
    (PatientBirthDate only) or ``none`` (no age at all), for clinical sites."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CR_IMAGE_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CR"
    ds.BodyPartExamined = "CHEST"
    ds.PatientName = f"SYNTHETIC^{style.name.upper()}^{idx:05d}"
    ds.PatientID = f"{style.name[-1].upper()}{idx:06d}"
    ds.PatientSex = "F" if rng.random() < 0.5 else "M"
    ds.PatientAge = f"{int(rng.integers(18, 90)):03d}Y"
    day = dt.date(2020, 1, 1) + dt.timedelta(days=int(rng.integers(0, 1800)))
    ds.StudyDate = day.strftime("%Y%m%d")
    if age is not None:
        years, how = age
        del ds.PatientAge
        if how == "tag":
            ds.PatientAge = f"{int(years):03d}Y"
        elif how == "birth":
            ds.PatientBirthDate = (day - dt.timedelta(days=round(years * 365.25))).strftime(
                "%Y%m%d"
            )
    ds.InstitutionName = f"Synthetic {style.name}"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = style.photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    if style.rescale_slope != 1.0 or style.rescale_intercept != 0.0:
        ds.RescaleSlope = f"{style.rescale_slope:g}"
        ds.RescaleIntercept = f"{style.rescale_intercept:g}"
        ds.RescaleType = "US"
    ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)


def generate_site(
    directory: Path,
    index: int,
    *,
    seed: int,
    num_images: int,
    image_size: int,
    test_fraction: float = 0.25,
    on_image: Callable[[], None] | None = None,
    clinical: bool = False,
) -> Path:
    """Write synthetic site ``index`` into ``directory`` (atomically) and return it.

    ``labels.csv`` lists ``path,label,split`` (and, with ``clinical``, the
    ``CLINICAL_COLUMNS``); the split is deterministic.
    """
    style = site_style(index)
    rng = np.random.default_rng([seed, index])
    with staged_directory(directory) as staging:
        rows: list[tuple[str, ...]] = []
        labels = (rng.random(num_images) < style.positive_fraction).astype(int)
        test = rng.random(num_images) < test_fraction
        for i, true_label in enumerate(labels):
            facts = _clinical_facts(rng) if clinical else None
            lesion = bool(true_label) if facts is None else facts[0]
            if facts is not None:
                true_label = int(lesion and facts[1] >= CLINICAL_AGE_CUTOFF)
            density = synthesize_density(rng, image_size, opacity=lesion)
            recorded = true_label if rng.random() >= LABEL_NOISE else 1 - true_label
            name = f"img_{i:05d}.dcm"
            age = None if facts is None else (facts[1], facts[2])
            _write_dicom(staging / name, _acquire(density, style, rng), style, rng, i, age)
            row = (name, LABEL_NAMES[recorded], "test" if test[i] else "train")
            rows.append(row if facts is None else (*row, *facts[3:]))
            if on_image is not None:
                on_image()
        header = ["path", "label", "split", *(CLINICAL_COLUMNS if clinical else ())]
        write_csv(staging / "labels.csv", header, rows)
    return directory


def _clinical_facts(rng: np.random.Generator) -> tuple[bool, float, str, str, str]:
    """One clinical patient: lesion, age (years), how the age is written, smoker, bmi."""
    lesion = bool(rng.random() < 0.7)
    age = float(rng.uniform(30, 90))
    how = str(rng.choice(["tag", "tag", "tag", "tag", "tag", "tag", "birth", "birth", "none"]))
    smoker = str(rng.choice([*_SMOKER, ""]))
    bmi = f"{rng.normal(26, 4):.1f}" if rng.random() >= 0.15 else ""
    return lesion, age, how, smoker, bmi


def ensure_synthetic_site(
    root: Path,
    index: int,
    *,
    seed: int,
    num_images: int,
    image_size: int,
    test_fraction: float = 0.25,
    on_image: Callable[[], None] | None = None,
    clinical: bool = False,
) -> Path:
    """Folder of synthetic site ``index`` under ``root``, generated on first use.

    The folder name encodes every generation parameter, so a cached folder is reused only
    when it would be regenerated identically; ``labels.csv`` is written last (atomic rename).
    """
    variant = f"seed{seed}-n{num_images}-px{image_size}-test{test_fraction:g}"
    if clinical:
        variant += "-clinical"
    directory = root.expanduser() / variant / site_name(index)
    if not (directory / "labels.csv").exists():
        generate_site(
            directory,
            index,
            seed=seed,
            num_images=num_images,
            image_size=image_size,
            test_fraction=test_fraction,
            on_image=on_image,
            clinical=clinical,
        )
    return directory


def ensure_configured_site(
    data: DataConfig, seed: int, index: int, on_image: Callable[[], None] | None = None
) -> Path:
    """:func:`ensure_synthetic_site` with the generation settings of a run's data config.

    ``data.synthetic-kind = "series"`` makes a series hospital instead
    (``common.data.synthetic_series``; one ``on_image`` call per series).
    """
    if data.synthetic_kind == "series":
        from common.data.synthetic_series import ensure_series_site

        return ensure_series_site(
            Path(data.synthetic_root),
            index,
            seed=seed,
            num_series=data.synthetic_images_per_site,
            slices=data.synthetic_slices,
            image_size=data.synthetic_image_size,
            test_fraction=data.test_fraction,
            on_series=on_image,
        )
    return ensure_synthetic_site(
        Path(data.synthetic_root),
        index,
        seed=seed,
        num_images=data.synthetic_images_per_site,
        image_size=data.synthetic_image_size,
        test_fraction=data.test_fraction,
        on_image=on_image,
        clinical=data.synthetic_kind == "clinical",
    )
