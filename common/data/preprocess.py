"""The one normalisation applied to every image tensor before the model sees it."""

from __future__ import annotations

import torch

MEAN = 0.5
STD = 0.5


def normalise(images: torch.Tensor) -> torch.Tensor:
    """Map images in [0, 1] to roughly [-1, 1]."""
    return (images - MEAN) / STD
