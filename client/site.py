"""Which data folder this SuperNode trains on, from its node config.

A hospital's SuperNode names its folder with ``--node-config 'data-path="/data/export"
site-id="hospital-a"'``. A simulated node without a data path trains on its synthetic
hospital (``partition-id`` picks which), generated on first use into the synthetic cache,
or, when the run config describes a partitioned pool (``partition.pool``), on its share of
that pool, cut by the ``PartitionSource`` the simulation runner injects (this package never
imports ``simulations``).

Where the site's tensor cache lives is the site's decision: node config ``cache-dir`` (a
folder) and ``cache`` (false disables it), never the coordinator's run config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from client.node_values import node_bool, node_count
from common import keys
from common.config import DataConfig, MedfedConfig
from common.data.sitedata import with_validation
from common.data.sites import SiteData, SiteStore
from common.data.synthetic import ensure_configured_site
from common.errors import ConfigError
from common.naming import site_name


class PartitionSource(Protocol):
    """Hands out simulated site ``index``'s share of the pool the config describes."""

    def site_data(self, config: MedfedConfig, site: int) -> SiteData: ...


def site_data_config(node_config: Mapping[str, object], data: DataConfig) -> DataConfig:
    """``data`` with the site-local cache and decoding settings taken from the node config."""
    cache = node_bool(keys.NODE_CACHE, node_config.get(keys.NODE_CACHE, True))
    return dataclasses.replace(
        data,
        cache=cache,
        cache_dir=str(node_config.get(keys.NODE_CACHE_DIR, "") or ""),
        workers=node_count(keys.NODE_DECODE_WORKERS, node_config.get(keys.NODE_DECODE_WORKERS, 0)),
    )


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
    ``partitions`` hands out shares of a partitioned pool (``partition.pool``), only in a
    simulation that injected one.
    """

    store: SiteStore
    partitions: PartitionSource | None = None
    site_defaults: Mapping[str, object] = dataclasses.field(default_factory=dict)
    # the val split carved from each loaded site's data (by the data object's id)
    carved: dict[int, tuple[SiteData, tuple[float, int], SiteData]] = dataclasses.field(
        default_factory=dict
    )

    @classmethod
    def create(
        cls,
        *,
        progress: bool = False,
        on_load: Callable[[SiteData], None] | None = None,
        partitions: PartitionSource | None = None,
        site_defaults: Mapping[str, object] | None = None,
    ) -> SiteSources:
        """Empty sources; ``on_load`` runs once per site folder actually read.

        ``site_defaults``: node-config values for nodes that set none themselves (a local
        simulation plays every site, e.g. ``cache-dir``).
        """
        store = SiteStore(progress=progress, on_load=on_load)
        return cls(store, partitions, dict(site_defaults or {}))

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "carved": {}}

    def node_config(self, node_config: Mapping[str, object]) -> dict[str, object]:
        """The node's config over the injected ``site_defaults`` (the node's own values win)."""
        return {**self.site_defaults, **node_config}

    def load(self, node_config: Mapping[str, object], config: MedfedConfig) -> tuple[int, SiteData]:
        """This node's site index and data: its own folder, a pool partition, or synthetic.

        A node with a ``data-path`` always reads its own folder; the pool is only for simulated
        nodes (``partition-id`` without a data path). A site without a val split gets one
        carved from its training images (``common.data.sitedata.with_validation``).
        """
        index, data = self._load(node_config, config)
        return index, self._with_validation(data, config)

    def _with_validation(self, data: SiteData, config: MedfedConfig) -> SiteData:
        """The site's data with a val split (``eval.val-fraction``), carved once per load."""
        key = (config.eval.val_fraction, config.run.seed)
        carved = self.carved.get(id(data))
        if carved is None or carved[0] is not data or carved[1] != key:
            split = with_validation(data, config.eval.val_fraction, config.run.seed)
            carved = (data, key, split)
            self.carved.pop(id(data), None)
            if len(self.carved) > self.store.capacity:
                self.carved.pop(next(iter(self.carved)))
            self.carved[id(data)] = carved
        return carved[2]

    def _load(
        self, node_config: Mapping[str, object], config: MedfedConfig
    ) -> tuple[int, SiteData]:
        if config.partition.pool and not node_config.get(keys.NODE_DATA_PATH):
            if keys.NODE_PARTITION_ID not in node_config:
                raise ConfigError(
                    "a partitioned simulation needs 'partition-id' in the node config"
                )
            if self.partitions is None:
                raise ConfigError(
                    "partition.pool is for simulated hospitals: run it with 'medfed simulate'"
                )
            index = int(node_config[keys.NODE_PARTITION_ID])  # type: ignore[call-overload]
            return index, self.partitions.site_data(config, index)
        site = locate_site(node_config, config)
        data = site_data_config(self.node_config(node_config), config.data)
        return site.site_index, self.store.get(site.path, data, site.site_id)
