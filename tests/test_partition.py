"""Partitioners, per-site splits, the class table, acquisition shift and lazy site data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from common.config import PARTITION_KINDS, MedfedConfig, PartitionConfig
from common.errors import ConfigError
from simulations.partition import PARTITIONERS, class_table, partition, split_site
from simulations.shift import AcquisitionStyle, apply_style, site_style
from simulations.sites import PartitionedPool, pool_labels, site_splits
from tests._fed_helpers import PNEUMONIA, write_pool

LABELS = np.random.default_rng(5).choice([0, 1, 2], size=2000, p=[0.5, 0.3, 0.2])


def _skew(shards: list[np.ndarray], labels: np.ndarray) -> float:
    """Mean total-variation distance between site label mixes and the pool's."""
    overall = np.bincount(labels, minlength=3) / len(labels)
    return float(
        np.mean(
            [
                0.5 * np.abs(np.bincount(labels[s], minlength=3) / len(s) - overall).sum()
                for s in shards
            ]
        )
    )


@pytest.mark.parametrize("kind", ["iid", "dirichlet", "quantity"])
def test_partition_is_deterministic_disjoint_and_complete(kind: str) -> None:
    # Prepare
    spec = PartitionConfig(kind=kind, alpha=0.5, min_size=20, seed=3)
    # Execute
    first = partition(LABELS, 10, spec)
    second = partition(LABELS, 10, spec)
    other_seed = partition(LABELS, 10, PartitionConfig(kind=kind, min_size=20, seed=4))
    # Assert
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other_seed, strict=True))
    everything = np.concatenate(first)
    assert len(everything) == len(LABELS) == len(np.unique(everything))
    assert min(len(s) for s in first) >= 20


def test_dirichlet_skews_labels_more_as_alpha_shrinks() -> None:
    iid = partition(LABELS, 10, PartitionConfig(kind="iid"))
    mild = partition(LABELS, 10, PartitionConfig(kind="dirichlet", alpha=10.0, min_size=5))
    strong = partition(LABELS, 10, PartitionConfig(kind="dirichlet", alpha=0.1, min_size=5))
    assert _skew(iid, LABELS) < 0.05
    assert _skew(iid, LABELS) < _skew(mild, LABELS) < _skew(strong, LABELS)
    assert _skew(strong, LABELS) > 0.3


def test_quantity_skew_follows_a_power_law_with_iid_labels() -> None:
    shards = partition(LABELS, 20, PartitionConfig(kind="quantity", power=1.5, min_size=10))
    sizes = sorted((len(s) for s in shards), reverse=True)
    assert sizes[0] > 10 * sizes[-1]
    assert sizes[0] > 2 * sizes[1]  # rank^-1.5: the largest has 2.8x the second's share
    assert min(sizes) >= 10
    big = [s for s in shards if len(s) > 100]
    assert _skew(big, LABELS) < 0.05


def test_bad_partition_settings_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match=r"'partition\.kind' = 'zipf': expected one of iid"):
        PartitionConfig(kind="zipf")
    assert tuple(PARTITIONERS) == PARTITION_KINDS
    with pytest.raises(ConfigError, match="cannot give 500 sites"):
        partition(LABELS, 500, PartitionConfig(kind="iid", min_size=10))
    with pytest.raises(ConfigError, match=r"raise partition\.alpha"):
        partition(LABELS, 50, PartitionConfig(kind="dirichlet", alpha=0.01, min_size=30))


def test_site_split_is_stratified_and_the_table_counts_every_image() -> None:
    shards = partition(LABELS, 4, PartitionConfig(kind="iid"))
    splits = [split_site(shard, LABELS, i, 0.25, seed=0) for i, shard in enumerate(shards)]
    for split, shard in zip(splits, shards, strict=True):
        assert not set(split.train) & set(split.test)
        assert sorted([*split.train, *split.test]) == sorted(shard)
        for label in range(3):
            in_shard = int((LABELS[shard] == label).sum())
            assert int((LABELS[split.test] == label).sum()) == round(0.25 * in_shard)
    header, rows = class_table(splits, LABELS)
    assert header == ["site", "train", "test", "class 0", "class 1", "class 2"]
    assert [row[0] for row in rows] == ["hospital-a", "hospital-b", "hospital-c", "hospital-d"]
    assert sum(int(row[1]) + int(row[2]) for row in rows) == len(LABELS)
    assert all(int(row[1]) + int(row[2]) == sum(int(v) for v in row[3:]) for row in rows)


def test_acquisition_shift_is_deterministic_and_site_zero_is_the_reference() -> None:
    images = np.random.default_rng(0).random((6, 1, 16, 16)).astype(np.float32)
    assert site_style(0, 0) == AcquisitionStyle()
    np.testing.assert_array_equal(apply_style(images, site_style(0, 0), 0, 0), images)
    styles = [site_style(0, site) for site in range(1, 40)]
    assert len({s.gain for s in styles}) == len(styles)
    assert any(s.invert for s in styles) and not all(s.invert for s in styles)
    assert any(s.resolution < 1 for s in styles)
    shifted = apply_style(images, site_style(0, 3), 0, 3)
    np.testing.assert_array_equal(shifted, apply_style(images, site_style(0, 3), 0, 3))
    assert shifted.shape == images.shape and shifted.min() >= 0 and shifted.max() <= 1
    assert not np.allclose(shifted, images)
    inverted = apply_style(images, AcquisitionStyle(invert=True), 0, 1)
    np.testing.assert_allclose(inverted, 1.0 - images, atol=1e-6)


def test_partitioned_pool_builds_only_the_requested_site(tmp_path: Path) -> None:
    # Prepare: a pool whose first pixel encodes each image's index
    labels = np.random.default_rng(1).integers(0, 2, size=200)
    pool = write_pool(tmp_path / "pool.npz", labels)
    config = MedfedConfig().replace(
        **{
            "partition.pool": str(pool),
            "partition.kind": "dirichlet",
            "partition.min-size": 10,
            "federation.num-sites": 4,
            "data.image-size": 8,
        }
    )
    _, splits = site_splits(config)
    # Execute
    data = PartitionedPool().site_data(config, 2)
    # Assert: exactly site 2's images, with their labels, as (n, 1, 8, 8) floats in [0, 1]
    indices = np.rint(data.train_x[:, 0, 0, 0].numpy() * 255).astype(int)
    assert sorted(indices) == sorted(splits[2].train)
    assert data.train_y.tolist() == labels[splits[2].train].tolist()
    assert data.site_id == "hospital-c" and tuple(data.train_x.shape[1:]) == (1, 8, 8)
    assert len(data.test_y) == len(splits[2].test)
    with pytest.raises(ConfigError, match=r"partition-id 4 is outside 0\.\.3"):
        PartitionedPool().site_data(config, 4)


def _pool_config(pool: Path, split: str = "train") -> MedfedConfig:
    return MedfedConfig().replace(**{"partition.pool": str(pool), "partition.split": split})


def test_pool_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"partition\.pool: .*missing\.npz: does not exist"):
        pool_labels(_pool_config(tmp_path / "missing.npz"))
    pool = write_pool(tmp_path / "pool.npz", np.zeros(10, dtype=int))
    with pytest.raises(ConfigError, match=r"partition\.pool: .*has no array 'val_labels'"):
        pool_labels(_pool_config(pool, "val"))
    with pytest.raises(ConfigError, match=r"partition\.pool: .*has no array 'val_labels'"):
        PartitionedPool().site_data(_pool_config(pool, "val"), 0)
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match=r"partition\.pool: .*is not a readable \.npz"):
        pool_labels(_pool_config(broken))


def test_real_pneumoniamnist_pool_partitions_into_five_non_iid_hospitals() -> None:
    labels = pool_labels(_pool_config(PNEUMONIA))
    assert len(labels) == 4708 and np.bincount(labels).tolist() == [1214, 3494]
    shards = partition(labels, 5, PartitionConfig(kind="dirichlet", alpha=0.5, min_size=100))
    shares = [float(labels[s].mean()) for s in shards]
    assert max(shares) - min(shares) > 0.2
