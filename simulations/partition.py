"""Partitioners: cut one labelled pool into N simulated hospitals, deterministically.

Each partitioner maps the pool's labels to one index array per site, from a seeded
``numpy.random.Generator``; the same labels, settings and seed always give the same sites.
- ``iid``: a random permutation cut into N near-equal shards;
- ``dirichlet``: label skew; for every class, site shares ~ Dirichlet(alpha)
  (small alpha: each site sees mostly one class);
- ``quantity``: size skew; site sizes follow a power law (rank^-power, ranks shuffled), labels
  IID within a site.
Acquisition shift (per-site intensity, contrast, noise, resolution, inverted grey scale) is
orthogonal to these and lives in ``simulations.shift``.
Every site also gets a stratified held-out split (``data.test-fraction``) of its own shard.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from common.config import PartitionConfig
from common.errors import ConfigError
from common.naming import site_name

Partitioner = Callable[[np.ndarray, int, PartitionConfig, np.random.Generator], list[np.ndarray]]
MAX_DIRICHLET_DRAWS = 200


def iid(
    labels: np.ndarray, num_sites: int, config: PartitionConfig, rng: np.random.Generator
) -> list[np.ndarray]:
    """Near-equal random shards."""
    return list(np.array_split(rng.permutation(len(labels)), num_sites))


def dirichlet(
    labels: np.ndarray, num_sites: int, config: PartitionConfig, rng: np.random.Generator
) -> list[np.ndarray]:
    """Label skew: per class, site proportions drawn from Dirichlet(alpha)."""
    classes = np.unique(labels)
    for _ in range(MAX_DIRICHLET_DRAWS):
        shards: list[list[np.ndarray]] = [[] for _ in range(num_sites)]
        for label in classes:
            members = rng.permutation(np.flatnonzero(labels == label))
            shares = rng.dirichlet(np.full(num_sites, config.alpha))
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
            for site, part in enumerate(np.split(members, cuts)):
                shards[site].append(part)
        joined = [np.concatenate(parts) for parts in shards]
        if min(len(s) for s in joined) >= config.min_size:
            return joined
    raise ConfigError(
        f"dirichlet partition: could not give each of {num_sites} sites "
        f"{config.min_size} images in {MAX_DIRICHLET_DRAWS} draws; "
        "raise partition.alpha or lower partition.min-size"
    )


def quantity(
    labels: np.ndarray, num_sites: int, config: PartitionConfig, rng: np.random.Generator
) -> list[np.ndarray]:
    """Size skew: sizes ~ min_size + share of the rest proportional to rank^-power."""
    spare = len(labels) - num_sites * config.min_size
    if spare < 0:
        raise ConfigError(
            f"quantity partition: {len(labels)} images cannot give {num_sites} sites "
            f"{config.min_size} each; lower partition.min-size"
        )
    weights = rng.permutation(np.arange(1, num_sites + 1, dtype=np.float64) ** -config.power)
    extra = np.floor(spare * weights / weights.sum()).astype(int)
    extra[np.argmax(weights)] += spare - int(extra.sum())
    sizes = config.min_size + extra
    return list(np.split(rng.permutation(len(labels)), np.cumsum(sizes)[:-1]))


PARTITIONERS: dict[str, Partitioner] = {"iid": iid, "dirichlet": dirichlet, "quantity": quantity}


@dataclass(frozen=True)
class SiteSplit:
    """Pool indices of one site's training and held-out images."""

    site: str
    train: np.ndarray
    test: np.ndarray


def partition(labels: np.ndarray, num_sites: int, config: PartitionConfig) -> list[np.ndarray]:
    """Sorted pool indices of each site (disjoint, covering the pool)."""
    if num_sites * max(config.min_size, 1) > len(labels):
        raise ConfigError(
            f"a pool of {len(labels)} images cannot give {num_sites} sites "
            f"{max(config.min_size, 1)} images each"
        )
    partitioner = PARTITIONERS[config.kind]  # kinds: common.config.PARTITION_KINDS
    rng = np.random.default_rng(config.seed)
    return [np.sort(shard) for shard in partitioner(labels, num_sites, config, rng)]


def split_site(
    shard: np.ndarray, labels: np.ndarray, site: int, test_fraction: float, seed: int
) -> SiteSplit:
    """Stratified, seeded train / held-out split of one site's shard."""
    rng = np.random.default_rng([seed, site])
    test_parts = []
    for label in np.unique(labels[shard]):
        members = rng.permutation(shard[labels[shard] == label])
        test_parts.append(members[: round(test_fraction * len(members))])
    test = np.sort(np.concatenate(test_parts)) if test_parts else shard[:0]
    train = np.setdiff1d(shard, test)
    if len(train) == 0:
        train, test = test, test[:0]
    return SiteSplit(site_name(site), train, test)


def class_table(
    splits: list[SiteSplit], labels: np.ndarray
) -> tuple[list[str], list[list[str | int]]]:
    """Header and rows: site, train / held-out sizes, and per-class counts of the site."""
    classes = [int(c) for c in np.unique(labels)]
    header = ["site", "train", "test", *(f"class {c}" for c in classes)]
    rows: list[list[str | int]] = []
    for split in splits:
        both = np.concatenate([split.train, split.test])
        counts = np.bincount(labels[both], minlength=max(classes) + 1)
        rows.append(
            [split.site, len(split.train), len(split.test), *(int(counts[c]) for c in classes)]
        )
    return header, rows
