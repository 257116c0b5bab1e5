"""MedMNIST-style ``.npz`` arrays as a second data source (e.g. ../shared/data/medmnist).

The file holds ``{train,val,test}_images`` (N, H, W) or (N, H, W, 3) uint8 and
``{train,val,test}_labels`` (N, 1) or (N,) integers (``np.load`` without pickle). Images are
scaled to [0, 1] and resized to the model input with the same torch code as DICOM images;
labels must be below the number of configured class names. ``indices`` restricts a split to
some rows. Simulated hospitals cut from one pool use the same code: ``read_npz_labels`` reads
only a split's labels (enough to partition and print the class table) and ``load_npz_rows``
turns the rows of one split into a site's train / held-out tensors, optionally restyled on
[0, 1] images before the one resize (``common.data.preprocess.fit_batch``). No disk cache:
this is fast.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from common.config import DataConfig, parse_class_names
from common.data.manifest import SPLITS
from common.data.preprocess import fit_batch
from common.data.sitedata import SiteData
from common.errors import SiteDataError

NPZ_SPLITS = {"train": "train", "val": "val", "test": "test"}
# (n, C, H, W) float32 in [0, 1] -> the same, e.g. a simulated site's acquisition style
Restyle = Callable[[torch.Tensor], torch.Tensor]


def find_npz(root: Path) -> Path | None:
    """``root`` if it is an ``.npz`` file, else the only ``.npz`` directly inside it."""
    if root.is_file() and root.suffix == ".npz":
        return root
    if root.is_dir():
        found = sorted(root.glob("*.npz"))
        if len(found) == 1:
            return found[0]
    return None


def read_npz(path: Path, site_id: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The (images, labels) arrays of each split present in the file."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            splits = {
                split: (arrays[f"{split}_images"], arrays[f"{split}_labels"].reshape(-1))
                for split in SPLITS
                if f"{split}_images" in arrays and f"{split}_labels" in arrays
            }
    except (OSError, ValueError, KeyError) as exc:
        raise SiteDataError(site_id, f"cannot read npz arrays ({exc})", path) from None
    if "train" not in splits:
        raise SiteDataError(site_id, "npz file has no train_images/train_labels", path)
    for split, (images, labels) in splits.items():
        if images.ndim not in (3, 4) or len(images) != len(labels):
            raise SiteDataError(
                site_id,
                f"npz split '{split}' has images {images.shape}, labels {labels.shape}",
                path,
            )
    return splits


def load_npz_site(
    path: Path,
    config: DataConfig,
    site_id: str,
    indices: Mapping[str, Sequence[int]] | None = None,
) -> SiteData:
    """A ``SiteData`` from an ``.npz`` file, optionally restricted to some rows per split."""
    num_classes = len(parse_class_names(config.class_names))
    tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for split, (images, labels) in read_npz(path, site_id).items():
        if indices is not None:
            rows = np.asarray(indices.get(split, []), dtype=np.int64)
            images, labels = images[rows], labels[rows]
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise SiteDataError(
                site_id,
                f"npz split '{split}' has labels up to {int(labels.max())} but "
                f"data.class-names lists {num_classes} classes",
                path,
            )
        tensors[split] = (
            to_model_tensor(images, config.image_size, config.channels),
            torch.from_numpy(labels.astype(np.int64)),
        )
    if not len(tensors["train"][1]):
        raise SiteDataError(site_id, "no training images in npz partition", path)
    empty = _empty_like(tensors["train"])
    return SiteData(
        site_id=site_id,
        train_x=tensors["train"][0],
        train_y=tensors["train"][1],
        test_x=tensors.get("test", empty)[0],
        test_y=tensors.get("test", empty)[1],
        val_x=tensors.get("val", empty)[0],
        val_y=tensors.get("val", empty)[1],
        layout="npz",
    )


def read_npz_labels(path: Path, split: str, site_id: str) -> np.ndarray:
    """Integer labels (N,) of one split, without reading (decompressing) any image."""
    return _npz_array(path, f"{split}_labels", site_id).reshape(-1).astype(np.int64)


def load_npz_rows(
    path: Path,
    config: DataConfig,
    site_id: str,
    *,
    split: str,
    train_rows: np.ndarray,
    test_rows: np.ndarray,
    restyle: Restyle | None = None,
) -> SiteData:
    """Rows of one split as a site's train / held-out tensors (in the order given)."""
    rows = np.concatenate([train_rows, test_rows]).astype(np.int64)
    images = _npz_array(path, f"{split}_images", site_id)
    if images.ndim not in (3, 4):
        raise SiteDataError(site_id, f"{split}_images has unsupported shape {images.shape}", path)
    labels = read_npz_labels(path, split, site_id)
    batch = to_unit_batch(images[rows])
    if restyle is not None:
        batch = restyle(batch)
    tensor = fit_batch(batch, config.image_size, config.channels)
    targets = torch.from_numpy(labels[rows])
    n_train = len(train_rows)
    return SiteData(
        site_id=site_id,
        train_x=tensor[:n_train],
        train_y=targets[:n_train],
        test_x=tensor[n_train:],
        test_y=targets[n_train:],
        layout="npz",
    )


def _npz_array(path: Path, key: str, site_id: str) -> np.ndarray:
    """One array of an ``.npz`` file (the others stay compressed on disk)."""
    if not path.is_file():
        raise SiteDataError(site_id, "does not exist", path)
    try:
        with np.load(path, allow_pickle=False) as arrays:
            if key not in arrays.files:
                raise SiteDataError(
                    site_id, f"has no array '{key}' (it has {', '.join(arrays.files)})", path
                )
            return arrays[key]
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise SiteDataError(site_id, f"is not a readable .npz: {exc}", path) from None


def to_unit_batch(images: np.ndarray) -> torch.Tensor:
    """(N, H, W) or (N, H, W, C) images -> float32 (N, C, H, W) in [0, 1] (uint8 / 255)."""
    batch = torch.from_numpy(np.ascontiguousarray(images))
    batch = batch.float().div_(255.0) if batch.dtype == torch.uint8 else batch.float()
    batch = batch.permute(0, 3, 1, 2) if batch.ndim == 4 else batch.unsqueeze(1)
    return batch.clamp(0.0, 1.0)


def to_model_tensor(images: np.ndarray, size: int, channels: int) -> torch.Tensor:
    """uint8 (N, H, W[, 3]) -> float32 (N, channels, size, size) in [0, 1]."""
    return fit_batch(to_unit_batch(images), size, channels)


def _empty_like(train: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    images, _ = train
    return images.new_zeros((0, *images.shape[1:])), torch.zeros(0, dtype=torch.long)
