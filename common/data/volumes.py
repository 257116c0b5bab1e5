"""Files -> training samples: series grouping, frame order and the 2D/sequence choice.

A *sample* is one labelled unit: a single image, one multi-frame object, or a *series* —
several single-frame cross-sectional files (with ImagePositionPatient/ImageOrientationPatient)
sharing one SeriesInstanceUID, ordered by their position along the slice normal, then by
InstanceNumber. Projection images (CR, DX, …) never form series: each file is its own sample.
Enhanced multi-frame objects are ordered by their per-frame plane positions.

``frames`` picks what a sample becomes (``DataConfig.frames``):
- ``middle`` (default, for 2D models): the middle frame/slice in that order — one image per
  study object, so DP protects each object and no near-duplicate slices enter training;
- ``all``: every frame/slice is its own 2D sample (more data, but correlated samples: DP then
  protects single frames, not the whole object);
- ``stack`` (sequence models): the ordered frames, resampled to ``stack_depth`` frames,
  shaped (C, D, H, W); a single image is repeated to that depth.
A series whose files disagree on the label or an explicit split is skipped (it would leak
between train and test); slices whose size differs from the rest of their series are skipped.
Slice-level labels: a file named by its own ``labels.csv`` row is its own sample whatever its
series (public CT data sets label every slice); series grouping applies to files of rows that
name a folder, to class folders, and always with ``stack``. Such files still take their split
from their series UID, so slices of one series never straddle train and test.
Unassigned splits are hashed from the series UID, or from the file path for single files.
A bad file costs only itself: files that cannot be read, or whose native pixel data is shorter
than their header says (cut short), are dropped before series are formed and duplicates
resolved (``describe``), so an intact copy of the same slice is kept and a series that lost
one slice is formed from its remaining intact slices (``middle`` then picks their middle).
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from pydicom.dataset import Dataset

from common.data.dicom import DicomInfo, decode_frame, frame_order
from common.data.manifest import LabelledFile, SkippedFile, hashed_split
from common.data.preprocess import resample_depth, to_model_input


@dataclass(frozen=True)
class Member:
    """One readable file of a site: its manifest entry, content digest and header facts."""

    entry: LabelledFile
    digest: str
    info: DicomInfo


@dataclass(frozen=True)
class Sample:
    """One labelled training unit made of one or more files (ordered)."""

    key: str
    members: tuple[Member, ...]
    label: int
    split: str

    @property
    def info(self) -> DicomInfo:
        return self.members[0].info


@dataclass(frozen=True)
class Geometry:
    """What a sample must become: model input size, channels and frame handling."""

    size: int
    channels: int
    frames: str = "middle"
    stack_depth: int = 16
    resize: str = "stretch"


def joins_a_series(entry: LabelledFile, info: DicomInfo, frames: str) -> bool:
    """Whether a file is grouped with the other slices of its series (else its own sample)."""
    in_series = info.frames == 1 and bool(info.series_uid) and info.slice_position is not None
    return in_series and (frames == "stack" or not entry.named)


def group_samples(
    members: list[Member], root: Path, test_fraction: float, frames: str = "middle"
) -> tuple[list[Sample], list[SkippedFile]]:
    """Turn readable files into samples; return them and the files left out (with reasons)."""
    singles: list[Member] = []
    series: dict[str, list[Member]] = defaultdict(list)
    for member in members:
        if joins_a_series(member.entry, member.info, frames):
            series[member.info.series_uid].append(member)
        else:
            singles.append(member)
    samples: list[Sample] = []
    skipped: list[SkippedFile] = []
    for member in singles:
        key = _relative(member, root)
        info = member.info
        if member.entry.named and info.series_uid and info.slice_position is not None:
            key = member.info.series_uid  # slice-level label: the series stays on one side
        split = member.entry.split or hashed_split(key, test_fraction)
        samples.append(Sample(member.digest, (member,), member.entry.label, split))
    for uid, group in series.items():
        if len(group) == 1:
            member = group[0]
            split = member.entry.split or hashed_split(_relative(member, root), test_fraction)
            samples.append(Sample(member.digest, (member,), member.entry.label, split))
            continue
        sample, problems = _series_sample(uid, group, test_fraction)
        skipped.extend(problems)
        if sample is not None:
            samples.append(sample)
    samples.sort(key=lambda s: str(s.members[0].entry.path))
    return samples, skipped


def _relative(member: Member, root: Path) -> str:
    path = member.entry.path
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _series_sample(
    uid: str, group: list[Member], test_fraction: float
) -> tuple[Sample | None, list[SkippedFile]]:
    labels = {m.entry.label for m in group}
    splits = {m.entry.split for m in group if m.entry.split}
    if len(labels) > 1 or len(splits) > 1:
        what = "labels" if len(labels) > 1 else "splits"
        reason = f"files of one series ({len(group)} files) have different {what}"
        return None, [SkippedFile(m.entry.path, reason) for m in group]
    shape = Counter(_shape(m.info) for m in group).most_common(1)[0][0]
    skipped = [
        SkippedFile(m.entry.path, "slice size or channels differ from the rest of its series")
        for m in group
        if _shape(m.info) != shape
    ]
    kept: list[Member] = []
    positions: set[float] = set()
    ordered = sorted(
        (m for m in group if _shape(m.info) == shape),
        key=lambda m: (m.info.slice_position, m.info.instance_number or 0, str(m.entry.path)),
    )
    for member in ordered:
        position = round(float(member.info.slice_position or 0.0), 3)
        if position in positions:
            skipped.append(SkippedFile(member.entry.path, "second slice at the same position"))
            continue
        positions.add(position)
        kept.append(member)
    key = hashlib.sha256("|".join(m.digest for m in kept).encode()).hexdigest()
    split = splits.pop() if splits else hashed_split(uid, test_fraction)
    return Sample(key, tuple(kept), kept[0].entry.label, split), skipped


def _shape(info: DicomInfo) -> tuple[int, int, int]:
    return info.rows, info.columns, info.samples_per_pixel


def sample_tensors(
    sample: Sample, datasets: list[Dataset], geometry: Geometry
) -> list[torch.Tensor]:
    """Decode a sample (its members' opened datasets, same order) into model-ready tensors.

    Returns one tensor for ``middle`` and ``stack`` and one per frame for ``all``.
    Raises ``DicomReadError`` if a frame cannot be decoded.
    """
    frames = _ordered_frames(sample, datasets)
    if geometry.frames == "middle":
        frames = [frames[len(frames) // 2]]
    images = [
        to_model_input(
            decode_frame(ds, member.info, index), geometry.size, geometry.channels, geometry.resize
        )
        for ds, member, index in frames
    ]
    if geometry.frames == "stack":
        return [resample_depth(torch.stack(images, dim=1), geometry.stack_depth)]
    return images


def _ordered_frames(sample: Sample, datasets: list[Dataset]) -> list[tuple[Dataset, Member, int]]:
    if len(sample.members) > 1:
        return [(ds, member, 0) for ds, member in zip(datasets, sample.members, strict=True)]
    ds, member = datasets[0], sample.members[0]
    return [(ds, member, index) for index in frame_order(ds, member.info.frames)]
