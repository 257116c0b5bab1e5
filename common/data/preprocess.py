"""Images in [0, 1] -> the model's input size and channels (torch ops only), and normalisation.

Every image source (a DICOM folder, a MedMNIST ``.npz``, a simulated site cut from a pool)
reaches the model through ``fit_batch``, and stays in [0, 1] until ``model_logits``, the one
place inputs are normalised (local training and evaluation both call it).

``to_model_input`` resizes one decoded frame to ``(channels, size, size)``: ``stretch`` scales
each axis independently, ``pad`` keeps the aspect ratio and pads the short side with black.
Colour to grayscale uses ITU-R BT.601 luma weights; grayscale to RGB repeats the channel.
``resample_depth`` brings an ordered stack of frames to a fixed depth for sequence models.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MEAN = 0.5
STD = 0.5
_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


def normalise(images: torch.Tensor) -> torch.Tensor:
    """Map images in [0, 1] to roughly [-1, 1]."""
    return (images - MEAN) / STD


def model_logits(model: nn.Module, images: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
    """Logits of ``model`` on images in [0, 1]: the one place model inputs are normalised.

    ``extra`` inputs (a fusion model's encoded clinical features) are passed on unchanged.
    """
    return model(normalise(images), *extra)


def to_model_input(
    image: np.ndarray, size: int, channels: int, mode: str = "stretch"
) -> torch.Tensor:
    """(H, W) or (H, W, 3) float in [0, 1] -> float32 tensor (channels, size, size) in [0, 1]."""
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    tensor = tensor.permute(2, 0, 1) if tensor.ndim == 3 else tensor.unsqueeze(0)
    if mode == "pad":
        tensor = _pad_square(tensor)
    return fit_batch(tensor.unsqueeze(0), size, channels).squeeze(0)


def fit_batch(batch: torch.Tensor, size: int, channels: int) -> torch.Tensor:
    """(N, 1 or 3, H, W) in [0, 1] -> (N, channels, size, size), resized with antialiasing."""
    if channels == 1 and batch.shape[1] == 3:
        batch = (batch * _LUMA).sum(dim=1, keepdim=True)
    elif channels == 3 and batch.shape[1] == 1:
        batch = batch.expand(-1, 3, -1, -1)
    if batch.shape[-2:] != (size, size):
        batch = F.interpolate(
            batch, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
    return batch.clamp(0.0, 1.0).contiguous()


def _pad_square(tensor: torch.Tensor) -> torch.Tensor:
    height, width = tensor.shape[-2:]
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    return F.pad(tensor, (left, side - width - left, top, side - height - top))


def resample_depth(frames: torch.Tensor, depth: int) -> torch.Tensor:
    """(C, F, S, S) ordered frames -> (C, depth, S, S) by linear interpolation along F."""
    if frames.shape[1] == depth:
        return frames.contiguous()
    mode = "nearest" if frames.shape[1] == 1 else "trilinear"
    size = (depth, *frames.shape[-2:])
    kwargs = {} if mode == "nearest" else {"align_corners": True}
    return (
        F.interpolate(frames.unsqueeze(0), size=size, mode=mode, **kwargs).squeeze(0).contiguous()
    )
