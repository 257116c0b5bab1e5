"""One pixel path: a simulated site and a hospital's own folder holding the same images give
the same tensors (same reader, same resize, same colour conversion)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from common.config import MedfedConfig
from common.data.preprocess import fit_batch
from common.data.sites import load_site
from simulations.sites import PartitionedPool, site_splits
from tests._fed_helpers import DATA_ROOT

N = 24
SOURCES = {"gray": "pneumoniamnist.npz", "rgb": "retinamnist.npz"}


def _source(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """The first N real MedMNIST images (uint8, 28x28, gray or RGB) and binary labels."""
    with np.load(DATA_ROOT / "medmnist" / SOURCES[kind]) as arrays:
        images = arrays["train_images"][:N]
        labels = arrays["train_labels"].reshape(-1)[:N].astype(np.int64) % 2
    return images, labels


def _expected(images: np.ndarray, size: int, channels: int) -> torch.Tensor:
    """The one preprocessing function applied to the images scaled to [0, 1]."""
    unit = torch.from_numpy(images).float() / 255.0
    unit = unit.permute(0, 3, 1, 2) if unit.ndim == 4 else unit.unsqueeze(1)
    return fit_batch(unit, size, channels)


def _config(pool: Path, size: int, channels: int) -> MedfedConfig:
    return MedfedConfig().replace(
        **{
            "partition.pool": str(pool),
            "partition.kind": "iid",
            "partition.min-size": 1,
            "federation.num-sites": 1,
            "federation.min-sites": 1,
            "data.image-size": size,
            "data.channels": channels,
            "data.cache": False,
        }
    )


def _write_rgb_dicom(path: Path, pixels: np.ndarray) -> None:
    """An 8-bit RGB secondary-capture DICOM file holding exactly ``pixels`` (H, W, 3)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)


@pytest.mark.parametrize("kind", ["gray", "rgb"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [32, 20])
def test_simulated_and_folder_sites_give_identical_tensors(
    tmp_path: Path, kind: str, channels: int, size: int
) -> None:
    # Prepare: the same images as a one-site pool and as a hospital folder with one .npz
    images, labels = _source(kind)
    pool = tmp_path / "pool.npz"
    np.savez(pool, train_images=images, train_labels=labels.reshape(-1, 1))
    folder = tmp_path / "hospital"
    folder.mkdir()
    np.savez(folder / "site.npz", train_images=images, train_labels=labels.reshape(-1, 1))
    config = _config(pool, size, channels)
    _, (split,) = site_splits(config)
    # Execute
    simulated = PartitionedPool().site_data(config, 0)
    own = load_site(folder, config.data, "hospital-a")
    # Assert: row for row the same tensors (the pool site's train / held-out rows are pool rows)
    assert len(split.test) > 0 and tuple(own.train_x.shape[1:]) == (channels, size, size)
    assert torch.equal(simulated.train_x, own.train_x[split.train])
    assert torch.equal(simulated.test_x, own.train_x[split.test])
    assert torch.equal(simulated.train_y, own.train_y[split.train])
    assert torch.equal(simulated.test_y, own.train_y[split.test])
    # ... and both are the one preprocessing function's output (the old pool resize was not)
    expected = _expected(images, size, channels)
    assert torch.equal(own.train_x, expected)
    old_pool_resize = F.interpolate(
        (torch.from_numpy(images).float() / 255.0)[:, None]
        if images.ndim == 3
        else (torch.from_numpy(images).float() / 255.0).permute(0, 3, 1, 2).mean(1, keepdim=True),
        size=(size, size),
        mode="bilinear",
        align_corners=False,
    )
    if size < images.shape[1] or (kind == "rgb" and channels == 1):
        assert not torch.equal(expected[:, :1], old_pool_resize.clamp(0, 1))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [32, 20])
def test_dicom_folder_matches_the_simulated_site(tmp_path: Path, channels: int, size: int) -> None:
    # Prepare: the same RGB images as 8-bit DICOM files in class folders, and as a pool
    images, labels = _source("rgb")
    for index, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        klass = tmp_path / "hospital" / ("normal", "opacity")[label]
        klass.mkdir(parents=True, exist_ok=True)
        _write_rgb_dicom(klass / f"{index:03d}.dcm", pixels)
    pool = tmp_path / "pool.npz"
    np.savez(pool, train_images=images, train_labels=labels.reshape(-1, 1))
    config = _config(pool, size, channels)
    # Execute
    simulated = PartitionedPool().site_data(config, 0)
    dicom = load_site(tmp_path / "hospital", config.data, "hospital-a")
    # Assert: every DICOM image is bit for bit one of the simulated site's, with its label
    pooled = torch.cat([simulated.train_x, simulated.test_x])
    pooled_y = torch.cat([simulated.train_y, simulated.test_y])
    found = []
    for image, label in zip(
        torch.cat([dicom.train_x, dicom.test_x]),
        torch.cat([dicom.train_y, dicom.test_y]),
        strict=True,
    ):
        matches = [i for i in range(len(pooled)) if torch.equal(pooled[i], image)]
        assert matches and int(pooled_y[matches[0]]) == int(label)
        found.append(matches[0])
    assert sorted(found) == list(range(N))
