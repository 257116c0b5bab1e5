"""Images for the privacy audit: a site's ordinary data plus the canaries planted in it.

The ordinary data is synthetic by default (``common.data.synthetic.synthesize_density``: the
chest-like density maps behind the built-in hospitals, made in memory, no files), so the
audit runs anywhere; ``source="medmnist"`` reads a binary MedMNIST ``.npz`` instead
(default ``../shared/data/medmnist``, its ``pneumoniamnist.npz`` when it holds several).
Canaries are out-of-distribution images (a random 8x8 block pattern each, unlike any chest
image) with a random label: the worst case for a model's memory, since nothing but the
example itself can teach its label. Each canary is included in the training set with
probability 1/2 (the one-run audit's random inclusion).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common.data.medmnist import find_npz, read_npz, to_model_tensor
from common.data.preprocess import fit_batch
from common.data.synthetic import synthesize_density
from common.errors import ConfigError

DEFAULT_MEDMNIST_ROOT = "../shared/data/medmnist"
DEFAULT_MEDMNIST_FILE = "pneumoniamnist.npz"  # picked from a folder holding several
SOURCES = ("synthetic", "medmnist")


@dataclass(frozen=True)
class CanarySet:
    """Canary images, their labels, and which of them went into training."""

    images: torch.Tensor  # (m, C, H, W) in [0, 1]
    labels: torch.Tensor  # (m,)
    included: np.ndarray  # (m,) bool


def ordinary_images(
    source: str,
    count: int,
    image_size: int,
    seed: int,
    medmnist_root: str = DEFAULT_MEDMNIST_ROOT,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` ordinary (N, 1, size, size) images in [0, 1] and their binary labels."""
    if source == "synthetic":
        rng = np.random.default_rng([seed, 1])
        labels = rng.random(count) < 0.5
        maps = np.stack([synthesize_density(rng, 2 * image_size, bool(y)) for y in labels])
        batch = torch.from_numpy(maps.astype(np.float32)).unsqueeze(1)
        return fit_batch(batch, image_size, 1), torch.from_numpy(labels.astype(np.int64))
    if source == "medmnist":
        root = Path(medmnist_root).expanduser()
        path = find_npz(root)
        if path is None and (root / DEFAULT_MEDMNIST_FILE).is_file():
            path = root / DEFAULT_MEDMNIST_FILE
        if path is None:
            raise ConfigError(
                f"audit medmnist-root: no single .npz file at {medmnist_root} "
                f"(and no {DEFAULT_MEDMNIST_FILE} in it): name the file itself"
            )
        images, labels = read_npz(path, "audit")["train"]
        if labels.max() > 1:
            raise ConfigError(f"audit medmnist-root: {path.name} is not a binary task")
        rows = np.random.default_rng([seed, 1]).permutation(len(labels))[:count]
        tensor = to_model_tensor(images[rows], image_size, 1)
        return tensor, torch.from_numpy(labels[rows].astype(np.int64))
    raise ConfigError(f"audit source: '{source}' is not one of {', '.join(SOURCES)}")


def make_canaries(count: int, image_size: int, seed: int, num_classes: int = 2) -> CanarySet:
    """``count`` out-of-distribution canaries with random labels, each included w.p. 1/2."""
    generator = torch.Generator().manual_seed(seed * 7919 + 3)
    coarse = torch.rand((count, 1, 8, 8), generator=generator)
    images = F.interpolate(coarse, size=(image_size, image_size), mode="nearest")
    labels = torch.randint(0, num_classes, (count,), generator=generator)
    included = np.random.default_rng([seed, 2]).random(count) < 0.5
    return CanarySet(images.clamp(0, 1), labels, included)
