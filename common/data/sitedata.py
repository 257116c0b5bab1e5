"""The in-memory result of loading a site: tensors per split plus what was left out."""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass, field

import numpy as np
import torch

from common.data.manifest import SkippedFile
from common.data.volumes import Sample


@dataclass
class SiteData:
    """Preprocessed tensors of one site: images (N, C, H, W) in [0, 1] and int labels.

    With ``data.frames = "stack"`` images are (N, C, D, H, W). ``val_*`` is empty unless the
    site names a validation split (``with_validation`` carves one from ``train``). ``samples``
    describes each usable DICOM sample (header facts only, never tag values); it is empty for
    ``.npz`` sources.
    """

    site_id: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    skipped: list[SkippedFile] = field(default_factory=list)
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None
    samples: list[Sample] = field(default_factory=list)
    layout: str = ""
    # per test image: its patient groups (``common.data.groups``; empty for ``.npz`` sources)
    test_groups: list[tuple[str, ...]] = field(default_factory=list)
    # per image of each split: raw clinical values (``common.data.clinical``); empty lists
    # for sources without any (``.npz``), which fusion models see as all missing
    train_clinical: list[dict[str, str]] = field(default_factory=list)
    val_clinical: list[dict[str, str]] = field(default_factory=list)
    test_clinical: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.val_x is None:
            self.val_x = self.train_x.new_zeros((0, *self.train_x.shape[1:]))
        if self.val_y is None:
            self.val_y = torch.zeros(0, dtype=torch.long)

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])


def with_validation(data: SiteData, fraction: float, seed: int) -> SiteData:
    """``data`` with a ``val`` split carved from its training images when it has none.

    Stratified (each class gives ``round(fraction * count)`` of its images, at least one of
    a class with two or more) and seeded by ``seed`` and the site id, so every round and every
    restart carves the same images. A site with a val split, or ``fraction`` 0, is returned
    unchanged; at least one training image always stays.
    """
    if fraction <= 0 or len(data.val_y) or len(data.train_y) < 2:  # type: ignore[arg-type]
        return data
    rng = np.random.default_rng([seed, zlib.crc32(data.site_id.encode())])
    labels = data.train_y.numpy()
    chosen: list[np.ndarray] = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        take = round(fraction * len(members))
        if len(members) >= 2:
            take = min(max(take, 1), len(members) - 1)
        chosen.append(members[:take])
    val = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
    if len(val) >= len(labels):
        val = val[:-1]
    keep = np.ones(len(labels), dtype=bool)
    keep[val] = False
    train = torch.from_numpy(np.flatnonzero(keep))
    held = torch.from_numpy(val)
    clinical = data.train_clinical
    return dataclasses.replace(
        data,
        train_x=data.train_x[train],
        train_y=data.train_y[train],
        val_x=data.train_x[held],
        val_y=data.train_y[held],
        train_clinical=[clinical[i] for i in train.tolist()] if clinical else [],
        val_clinical=[clinical[i] for i in held.tolist()] if clinical else [],
    )
