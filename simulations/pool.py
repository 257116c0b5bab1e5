"""The labelled pool simulated hospitals are cut from: one split of a MedMNIST-style ``.npz``.

The file holds ``<split>_images`` (N, H, W) or (N, H, W, C) uint8 and ``<split>_labels``
(N,) or (N, 1). ``read_labels`` reads only the labels (cheap: enough to partition and to print
the class table); ``read_images`` reads the images of the requested indices only when a site
trains. Until ``common.data.medmnist`` lands this is the one npz reader for simulations.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from common.errors import ConfigError


def _array(path: Path, key: str) -> np.ndarray:
    if not path.is_file():
        raise ConfigError(f"partition.pool: {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            if key not in data.files:
                raise ConfigError(
                    f"partition.pool: {path.name} has no array '{key}' "
                    f"(it has {', '.join(data.files)})"
                )
            return data[key]
    except (OSError, ValueError, zipfile.BadZipFile) as problem:
        raise ConfigError(f"partition.pool: {path} is not a readable .npz: {problem}") from None


def read_labels(path: Path, split: str, max_images: int = 0) -> np.ndarray:
    """Integer labels (N,) of ``split``, optionally only the first ``max_images``."""
    labels = _array(path, f"{split}_labels").reshape(-1).astype(np.int64)
    return labels[:max_images] if max_images > 0 else labels


def read_images(path: Path, split: str, indices: np.ndarray) -> np.ndarray:
    """The images at ``indices`` as float32 (n, C, H, W) in [0, 1]."""
    images = _array(path, f"{split}_images")[indices]
    if images.ndim == 3:
        images = images[:, None, :, :]
    elif images.ndim == 4:
        images = np.transpose(images, (0, 3, 1, 2))
    else:
        raise ConfigError(f"partition.pool: {split}_images has unsupported shape {images.shape}")
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    return (images.astype(np.float32) / scale).clip(0.0, 1.0)
