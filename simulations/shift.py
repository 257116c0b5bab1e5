"""Acquisition shift: each simulated hospital's scanner renders the same anatomy differently.

A site's ``AcquisitionStyle`` is drawn from ``(seed, site)``; applying it to images in [0, 1]
changes intensity (gain and offset), contrast (gamma), adds Gaussian sensor noise, lowers the
resolution (down- then up-sampling) and, for about one site in five, inverts the grey scale
the way a MONOCHROME1 export looks when the viewer's inversion is not applied. Site 0 keeps
the pool's own look, so there is always a reference site. Deterministic: same seed and site,
same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AcquisitionStyle:
    """How one site's images differ from the pool's."""

    gain: float = 1.0
    offset: float = 0.0
    gamma: float = 1.0
    noise: float = 0.0
    resolution: float = 1.0  # fraction of the original width kept before up-sampling
    invert: bool = False


def site_style(seed: int, site: int) -> AcquisitionStyle:
    """The style of ``site`` (site 0 is the unshifted reference)."""
    if site == 0:
        return AcquisitionStyle()
    rng = np.random.default_rng([seed, site, 7])
    return AcquisitionStyle(
        gain=float(rng.uniform(0.7, 1.2)),
        offset=float(rng.uniform(-0.1, 0.1)),
        gamma=float(rng.uniform(0.7, 1.4)),
        noise=float(rng.uniform(0.0, 0.06)),
        resolution=float(rng.choice([1.0, 0.75, 0.5])),
        invert=bool(rng.random() < 0.2),
    )


def apply_style(images: np.ndarray, style: AcquisitionStyle, seed: int, site: int) -> np.ndarray:
    """Images (n, C, H, W) in [0, 1] as ``site`` would have acquired them."""
    out = np.clip(images, 0.0, 1.0) ** style.gamma
    out = np.clip(out * style.gain + style.offset, 0.0, 1.0)
    if style.resolution < 1.0 and out.size:
        height, width = out.shape[-2:]
        small = (max(1, round(height * style.resolution)), max(1, round(width * style.resolution)))
        tensor = torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))
        low = F.interpolate(tensor, size=small, mode="area")
        out = F.interpolate(low, size=(height, width), mode="bilinear", align_corners=False).numpy()
    if style.noise > 0:
        rng = np.random.default_rng([seed, site, 11])
        out = out + rng.normal(0.0, style.noise, size=out.shape)
    out = np.clip(out, 0.0, 1.0)
    if style.invert:
        out = 1.0 - out
    return out.astype(np.float32)
