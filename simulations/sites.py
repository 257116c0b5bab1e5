"""A simulated hospital's data, cut lazily from the pool described in the run config.

The server ships the partition description (``partition.*`` settings) inside every train /
evaluate ConfigRecord, and each simulated node knows its ``partition-id``. ``PartitionedPool``
turns the two into that one site's tensors when the site is asked to work: it partitions the
pool's labels once per worker process, then reads the pool's images and keeps only the
requested site's (never all N sites' tensors), applying the site's acquisition shift.
Nothing here runs for a real hospital, which reads its own folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common.config import MedfedConfig
from common.data.sites import SiteData
from common.errors import ConfigError
from simulations.partition import SiteSplit, partition, split_site
from simulations.pool import read_images, read_labels
from simulations.shift import apply_style, site_style


def site_splits(config: MedfedConfig) -> tuple[np.ndarray, list[SiteSplit]]:
    """The pool's labels and every site's train / held-out indices (labels only are read)."""
    spec = config.partition
    labels = read_labels(Path(spec.pool), spec.split, spec.max_images)
    shards = partition(labels, config.federation.num_sites, spec)
    splits = [
        split_site(shard, labels, site, config.data.test_fraction, spec.seed)
        for site, shard in enumerate(shards)
    ]
    return labels, splits


def _fit(images: np.ndarray, size: int, channels: int) -> torch.Tensor:
    tensor = torch.from_numpy(images)
    if tensor.shape[1] != channels:
        tensor = tensor.mean(dim=1, keepdim=True) if channels == 1 else tensor[:, :1]
        tensor = tensor.expand(-1, channels, -1, -1).contiguous()
    if tensor.shape[-1] != size or tensor.shape[-2] != size:
        tensor = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False)
    return tensor.clamp(0.0, 1.0)


@dataclass
class PartitionedPool:
    """Owns one partitioned pool per process; hands out one site's ``SiteData`` at a time."""

    _key: tuple[object, ...] | None = None
    _labels: np.ndarray | None = None
    _splits: list[SiteSplit] = field(default_factory=list)

    def site_data(self, config: MedfedConfig, site: int) -> SiteData:
        """Training and held-out tensors of simulated site ``site``."""
        num_sites = config.federation.num_sites
        if not 0 <= site < num_sites:
            raise ConfigError(f"partition-id {site} is outside 0..{num_sites - 1}")
        key = (
            tuple(sorted(config.partition.__dict__.items())),
            num_sites,
            config.data.test_fraction,
        )
        if key != self._key:
            self._labels, self._splits = site_splits(config)
            self._key = key
        assert self._labels is not None
        split = self._splits[site]
        both = np.concatenate([split.train, split.test])
        images = read_images(Path(config.partition.pool), config.partition.split, both)
        if config.partition.shift:
            images = apply_style(
                images, site_style(config.partition.seed, site), config.partition.seed, site
            )
        tensor = _fit(images, config.data.image_size, config.data.channels)
        labels = torch.from_numpy(self._labels[both])
        n_train = len(split.train)
        return SiteData(
            site_id=split.site,
            train_x=tensor[:n_train],
            train_y=labels[:n_train],
            test_x=tensor[n_train:],
            test_y=labels[n_train:],
        )
