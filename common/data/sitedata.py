"""The in-memory result of loading a site: tensors per split plus what was left out."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from common.data.manifest import SkippedFile
from common.data.volumes import Sample


@dataclass
class SiteData:
    """Preprocessed tensors of one site: images (N, C, H, W) in [0, 1] and int labels.

    With ``data.frames = "stack"`` images are (N, C, D, H, W). ``val_*`` is empty unless the
    site names a validation split. ``samples`` describes each usable DICOM sample (header
    facts only, never tag values); it is empty for ``.npz`` sources.
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

    def __post_init__(self) -> None:
        if self.val_x is None:
            self.val_x = self.train_x.new_zeros((0, *self.train_x.shape[1:]))
        if self.val_y is None:
            self.val_y = torch.zeros(0, dtype=torch.long)

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])
