"""A hospital's data folder -> labelled, preprocessed tensors (they never leave the site).

Supported layouts:
- ``labels.csv`` with columns ``path,label`` and optionally ``split`` (``train``/``test``);
- one subfolder per class (``normal/…``, ``opacity/…``).
Without a split column a deterministic, path-hashed fraction goes to the held-out split.
Unusable files are skipped with a recorded reason (or stop the load when ``strict``); a
site with nothing usable raises ``SiteDataError`` naming the site.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from common.config import DataConfig
from common.data.dicom import DicomReadError, read_dicom_image
from common.data.synthetic import LABEL_NAMES
from common.errors import SiteDataError

LABELS_FILE = "labels.csv"
IMAGE_SUFFIXES = {".dcm", ".dicom", ""}


@dataclass(frozen=True)
class LabelledFile:
    """One entry of a site's manifest."""

    path: Path
    label: str
    split: str


@dataclass(frozen=True)
class SkippedFile:
    """A file left out of training, and why."""

    path: Path
    reason: str


@dataclass
class SiteData:
    """Preprocessed tensors of one site: images (N, C, H, W) in [0, 1] and int labels."""

    site_id: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    skipped: list[SkippedFile] = field(default_factory=list)

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])


def read_manifest(root: Path, site_id: str, test_fraction: float) -> list[LabelledFile]:
    """List the labelled files of a site folder (labels.csv or class subfolders)."""
    if not root.is_dir():
        raise SiteDataError(site_id, "data folder does not exist", root)
    labels_csv = root / LABELS_FILE
    if labels_csv.exists():
        entries = _manifest_from_csv(labels_csv, site_id, test_fraction)
    else:
        entries = _manifest_from_subfolders(root, test_fraction)
    if not entries:
        raise SiteDataError(
            site_id, f"no labelled images found (expected {LABELS_FILE} or class folders)", root
        )
    return entries


def _hashed_split(relative: str, test_fraction: float) -> str:
    digest = hashlib.sha256(relative.encode()).digest()
    return "test" if int.from_bytes(digest[:4], "big") / 2**32 < test_fraction else "train"


def _manifest_from_csv(labels_csv: Path, site_id: str, test_fraction: float) -> list[LabelledFile]:
    with open(labels_csv, newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
            raise SiteDataError(site_id, "labels.csv needs the columns path,label", labels_csv)
        entries = []
        for row in reader:
            relative = (row.get("path") or "").strip()
            split = (row.get("split") or "").strip().lower()
            if split not in {"train", "test"}:
                split = _hashed_split(relative, test_fraction)
            entries.append(
                LabelledFile(labels_csv.parent / relative, (row.get("label") or "").strip(), split)
            )
    return entries


def _manifest_from_subfolders(root: Path, test_fraction: float) -> list[LabelledFile]:
    entries = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name in LABEL_NAMES):
        for file in sorted(class_dir.rglob("*")):
            if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES:
                relative = str(file.relative_to(root))
                entries.append(
                    LabelledFile(file, class_dir.name, _hashed_split(relative, test_fraction))
                )
    return entries


def load_site(
    root: Path,
    config: DataConfig,
    site_id: str,
    *,
    on_file: Callable[[], None] | None = None,
) -> SiteData:
    """Read, check and preprocess every labelled image of a site folder."""
    entries = read_manifest(root, site_id, config.test_fraction)
    images: dict[str, list[torch.Tensor]] = {"train": [], "test": []}
    labels: dict[str, list[int]] = {"train": [], "test": []}
    skipped: list[SkippedFile] = []
    for entry in entries:
        try:
            label = _label_index(entry.label)
            if not entry.path.is_file():
                raise DicomReadError("file listed in labels.csv does not exist")
            image = read_dicom_image(entry.path, config.image_size, config.channels)
        except DicomReadError as problem:
            if config.strict:
                raise SiteDataError(site_id, str(problem), entry.path) from None
            skipped.append(SkippedFile(entry.path, str(problem)))
        else:
            images[entry.split].append(image)
            labels[entry.split].append(label)
        if on_file is not None:
            on_file()
    if not images["train"]:
        first = f"; first problem: {skipped[0].path.name}: {skipped[0].reason}" if skipped else ""
        raise SiteDataError(site_id, f"no usable training images in {root}{first}")
    return SiteData(
        site_id=site_id,
        train_x=torch.stack(images["train"]),
        train_y=torch.tensor(labels["train"], dtype=torch.long),
        test_x=_stack_or_empty(images["test"], images["train"][0]),
        test_y=torch.tensor(labels["test"], dtype=torch.long),
        skipped=skipped,
    )


def _label_index(label: str) -> int:
    if label in LABEL_NAMES:
        return LABEL_NAMES.index(label)
    if label.isdigit() and int(label) < len(LABEL_NAMES):
        return int(label)
    raise DicomReadError(f"unknown label '{label}' (expected one of {', '.join(LABEL_NAMES)})")


def _stack_or_empty(images: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    return torch.stack(images) if images else like.new_zeros((0, *like.shape))
