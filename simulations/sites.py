"""A simulated hospital's data, cut lazily from the pool described in the run config.

The server ships the partition description (``partition.*`` settings) inside every train /
evaluate ConfigRecord, and each simulated node knows its ``partition-id``. ``PartitionedPool``
turns the two into that one site's tensors when the site is asked to work: it partitions the
pool's labels once per worker process, then reads the pool's images through the same MedMNIST
reader and resize as a hospital's own ``.npz`` folder (``common.data.medmnist``), keeping only
the requested site's rows (never all N sites' tensors) and applying the site's acquisition
shift on [0, 1] images before the resize. Nothing here runs for a real hospital, which reads
its own folder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from common.config import MedfedConfig
from common.data.medmnist import Restyle, load_npz_rows, read_npz_labels
from common.data.sites import SiteData
from common.errors import ConfigError, SiteDataError
from simulations.partition import SiteSplit, partition, split_site
from simulations.shift import apply_style, site_style

T = TypeVar("T")


def pool_labels(config: MedfedConfig) -> np.ndarray:
    """Integer labels of the pool's split (only the first ``partition.max-images`` if set)."""
    spec = config.partition
    labels = _pool_call(lambda: read_npz_labels(Path(spec.pool), spec.split, "pool"))
    return labels[: spec.max_images] if spec.max_images > 0 else labels


def site_splits(config: MedfedConfig) -> tuple[np.ndarray, list[SiteSplit]]:
    """The pool's labels and every site's train / held-out indices (labels only are read)."""
    labels = pool_labels(config)
    shards = partition(labels, config.federation.num_sites, config.partition)
    splits = [
        split_site(shard, labels, site, config.data.test_fraction, config.partition.seed)
        for site, shard in enumerate(shards)
    ]
    return labels, splits


def _pool_call(read: Callable[[], T]) -> T:
    """Run a pool read; a problem with the file is a configuration error (``partition.pool``)."""
    try:
        return read()
    except SiteDataError as problem:
        where = f"{problem.path}: " if problem.path else ""
        raise ConfigError(f"partition.pool: {where}{problem.reason}") from None


def _shift(config: MedfedConfig, site: int) -> Restyle | None:
    """The site's acquisition style as a function on (n, C, H, W) images in [0, 1]."""
    if not config.partition.shift:
        return None
    seed = config.partition.seed
    style = site_style(seed, site)
    return lambda batch: torch.from_numpy(apply_style(batch.numpy(), style, seed, site))


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
        split = self._splits[site]
        return _pool_call(
            lambda: load_npz_rows(
                Path(config.partition.pool),
                config.data,
                split.site,
                split=config.partition.split,
                train_rows=split.train,
                test_rows=split.test,
                restyle=_shift(config, site),
            )
        )
