"""Augmented views of each training image, averaged inside its per-sample gradient.

``train.augment-views`` = K > 0 trains every step on K randomly shifted (and, with
``train.augment-flip``, horizontally flipped) views of each image in the batch instead of
the image itself. Without DP that is ordinary data augmentation (K views of each example in
the batch). Under DP-SGD it is *augmentation multiplicity* (De et al., 2022): the K views'
per-sample gradients, which Opacus computed one per row, are averaged into one gradient per
example **before** Opacus clips them, so each example still contributes one clipped gradient
and the privacy accounting (sample rate, noise, steps) is exactly that of plain DP-SGD:
no extra privacy cost, only K times the compute.

A shift moves the image by up to ``train.augment-shift`` pixels in each direction, filling
with the border's pixels (replicate padding), as random-crop-with-padding does for natural
images. ``train.augment-intensity`` = a > 0 also changes each view's brightness and contrast,
as a scanner or a hospital's windowing would: the view is scaled by a factor drawn from
[1 - a, 1 + a] (brightness), then stretched about its own mean by another (contrast), and
clipped to [0, 1]; all channels and frames of a view change together.
``train.augment-rotate`` = d > 0 first turns each view about its centre by an angle drawn
from [-d, d] degrees (bilinear, the border's pixels filling the corners), as a fundus or an
ultrasound probe may sit at any angle. Views are drawn from
torch's global generator, which the site seeds per round, so a resumed round reproduces its
views.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional


def augmented_views(
    images: torch.Tensor,
    views: int,
    shift: int,
    flip: bool,
    intensity: float = 0.0,
    rotate: float = 0.0,
) -> torch.Tensor:
    """``views`` augmented copies of every image, an image's copies next to each other.

    ``images``: (N, C, H, W) or (N, C, D, H, W); in [0, 1] when ``intensity`` > 0, else any
    value range. Returns (N * views, ...) where rows ``i * views .. (i + 1) * views - 1`` are
    views of image ``i``.
    """
    if views < 1:
        raise ValueError("views must be at least 1")
    repeated = images.repeat_interleave(views, dim=0)
    if len(repeated) == 0:
        return repeated
    height, width = repeated.shape[-2:]
    if rotate > 0:
        repeated = _rotate(repeated, rotate)
    if shift > 0:  # one random offset per view, the same for all its channels and frames
        flat = repeated.reshape(len(repeated), -1, height, width)
        padded = functional.pad(flat, (shift, shift, shift, shift), mode="replicate")
        offsets = torch.randint(0, 2 * shift + 1, (len(flat), 2))
        rows = offsets[:, :1] + torch.arange(height)  # (M, H)
        cols = offsets[:, 1:] + torch.arange(width)  # (M, W)
        which = torch.arange(len(flat))[:, None, None]
        shifted = padded[which, :, rows[:, :, None], cols[:, None, :]]  # (M, H, W, C)
        repeated = shifted.permute(0, 3, 1, 2).reshape(repeated.shape)
    if flip:
        flipped = torch.rand(len(repeated)) < 0.5
        repeated = torch.where(
            flipped.view(-1, *([1] * (repeated.dim() - 1))), repeated.flip(-1), repeated
        )
    if intensity > 0:
        repeated = _jitter_intensity(repeated, intensity)
    return repeated


def _rotate(views: torch.Tensor, max_degrees: float) -> torch.Tensor:
    """Each view turned about its centre by an angle from [-max_degrees, max_degrees],
    bilinear, the border's pixels filling the corners; all its channels and frames alike."""
    height, width = views.shape[-2:]
    flat = views.reshape(len(views), -1, height, width)
    angles = (2 * torch.rand(len(flat)) - 1) * math.radians(max_degrees)
    cos, sin = torch.cos(angles), torch.sin(angles)
    # affine_grid works in [-1, 1] coordinates; the aspect ratio keeps a turn a turn
    aspect = width / height
    theta = torch.stack(
        [
            torch.stack([cos, -sin / aspect, torch.zeros_like(cos)], dim=1),
            torch.stack([sin * aspect, cos, torch.zeros_like(cos)], dim=1),
        ],
        dim=1,
    ).to(flat.dtype)
    grid = functional.affine_grid(theta, list(flat.shape), align_corners=False)
    turned = functional.grid_sample(
        flat, grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    return turned.reshape(views.shape)


def _jitter_intensity(views: torch.Tensor, amount: float) -> torch.Tensor:
    """Each view's brightness, then its contrast about its own mean, scaled by a factor from
    [1 - amount, 1 + amount]; the result clipped to [0, 1]."""
    shape = (len(views), *([1] * (views.dim() - 1)))
    brightness = 1 + (2 * torch.rand(shape) - 1) * amount
    contrast = 1 + (2 * torch.rand(shape) - 1) * amount
    brighter = views * brightness
    mean = brighter.mean(dim=tuple(range(1, views.dim())), keepdim=True)
    return ((brighter - mean) * contrast + mean).clamp(0, 1)


def average_view_gradients(model: nn.Module, views: int) -> None:
    """Average each example's ``views`` per-sample gradients (Opacus' ``grad_sample``) into
    one, in place, before the DP optimizer clips them."""
    if views <= 1:
        return
    for parameter in model.parameters():
        sample = getattr(parameter, "grad_sample", None)
        if sample is None:
            continue
        parameter.grad_sample = sample.reshape(-1, views, *sample.shape[1:]).mean(dim=1)
