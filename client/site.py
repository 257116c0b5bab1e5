"""Which data folder this SuperNode trains on, from its node config.

A hospital's SuperNode names its folder with ``--node-config 'data-path="/data/export"
site-id="hospital-a"'``. A simulated node without a data path trains on its synthetic
hospital (``partition-id`` picks which), generated on first use into the synthetic cache,
or, when the run config describes a partitioned pool (``partition.pool``), on its share of
that pool (``simulations.sites``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from common import keys
from common.config import MedfedConfig
from common.data.sites import SiteData, SiteStore
from common.data.synthetic import ensure_configured_site, site_name
from common.errors import ConfigError
from simulations.sites import PartitionedPool


@dataclass(frozen=True)
class SiteLocation:
    """A site's identity and the folder holding its images."""

    site_id: str
    site_index: int
    path: Path


def locate_site(node_config: Mapping[str, object], config: MedfedConfig) -> SiteLocation:
    """Resolve the site folder, generating the synthetic hospital when none is configured."""
    index = int(node_config.get(keys.NODE_PARTITION_ID, 0))  # type: ignore[call-overload]
    data_path = node_config.get(keys.NODE_DATA_PATH)
    if data_path:
        path = Path(str(data_path)).expanduser()
        site_id = str(node_config.get(keys.NODE_SITE_ID) or path.name)
        return SiteLocation(site_id, index, path)
    if keys.NODE_PARTITION_ID not in node_config:
        raise ConfigError(
            "node config has neither 'data-path' nor 'partition-id': "
            "start the SuperNode with --node-config 'data-path=\"/path/to/site\"'"
        )
    path = ensure_configured_site(config.data, config.run.seed, index)
    return SiteLocation(site_name(index), index, path)


@dataclass
class SiteSources:
    """Where one client process gets site data, each loaded once and reused every round.

    ``store`` reads site folders (real hospitals and synthetic ones) through the tensor cache;
    ``pool`` hands out shares of a partitioned pool for simulations (``partition.pool``).
    """

    store: SiteStore
    pool: PartitionedPool

    @classmethod
    def create(
        cls, *, progress: bool = False, on_load: Callable[[SiteData], None] | None = None
    ) -> SiteSources:
        """Empty sources; ``on_load`` runs once per site folder actually read."""
        return cls(SiteStore(progress=progress, on_load=on_load), PartitionedPool())

    def load(self, node_config: Mapping[str, object], config: MedfedConfig) -> tuple[int, SiteData]:
        """This node's site index and data: its own folder, a pool partition, or synthetic.

        A node with a ``data-path`` always reads its own folder; the pool is only for simulated
        nodes (``partition-id`` without a data path).
        """
        if config.partition.pool and not node_config.get(keys.NODE_DATA_PATH):
            if keys.NODE_PARTITION_ID not in node_config:
                raise ConfigError(
                    "a partitioned simulation needs 'partition-id' in the node config"
                )
            index = int(node_config[keys.NODE_PARTITION_ID])  # type: ignore[call-overload]
            return index, self.pool.site_data(config, index)
        site = locate_site(node_config, config)
        return site.site_index, self.store.get(site.path, config.data, site.site_id)
