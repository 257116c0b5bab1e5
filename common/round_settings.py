"""What a site receives with each train / evaluate instruction: one encode / decode pair.

The coordinator decides the run; a hospital decides where its data, cache and privacy state
live. So the server sends each site only the settings that shape local work
(``SITE_SECTIONS``: data, model, local training, privacy, the federation's size and plan,
a simulated partition, evaluation (validation split, smallest reported patient group),
on-site augmentation; plus
the seed and SecAgg+'s weight cap) and the run key under which
the site books its privacy spend. Whole sections travel, so the config the site rebuilds
passes the same cross-field checks as the coordinator's. Site-local keys
(``SITE_LOCAL_KEYS``) are never sent; a site that still receives one (an older or hostile
server) ignores it, and logs it.

Flower's strategies add ``server-round`` (and FedProx ``proximal-mu``) to the same
ConfigRecord; ``decode_round_settings`` takes them out too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from common import keys
from common.config import MedfedConfig, Scalar

LOG = logging.getLogger("medfed.client")

SITE_SECTIONS = (
    "data",
    "model",
    "train",
    "privacy",
    "federation",
    "partition",
    "eval",
    "augment",
)
SITE_KEYS = ("run.seed", "secagg.max-weight")
# Decided by the site itself (its node config, or the simulation runner that plays the site).
SITE_LOCAL_KEYS = frozenset({"data.cache", "data.cache-dir", "data.workers"})


@dataclass(frozen=True)
class RoundSettings:
    """What the server sent with one train / evaluate instruction."""

    config: MedfedConfig
    server_round: int
    proximal_mu: float  # FedProx; 0 = plain local training
    run_key: str  # the run's name in the site's privacy state ("" = use Flower's run id)


def _sent_to_sites(key: str) -> bool:
    return key not in SITE_LOCAL_KEYS and (
        key.partition(".")[0] in SITE_SECTIONS or key in SITE_KEYS
    )


def encode_round_settings(config: MedfedConfig, run_key: str) -> dict[str, Scalar]:
    """The flat settings every sampled site gets (Flower adds ``server-round``)."""
    settings = {key: value for key, value in config.to_flat().items() if _sent_to_sites(key)}
    settings[keys.RUN_KEY] = run_key
    return settings


def decode_round_settings(record: Mapping[str, Any]) -> RoundSettings:
    """Inverse of :func:`encode_round_settings` at the site.

    Keys outside the round settings (site-local ones above all) are dropped with a warning
    naming them; a bad value of a round setting raises ``ConfigError``.
    """
    settings = dict(record)
    server_round = int(settings.pop(keys.SERVER_ROUND, 0))
    proximal_mu = float(settings.pop(keys.PROXIMAL_MU, 0.0))
    run_key = str(settings.pop(keys.RUN_KEY, ""))
    ignored = sorted(key for key in settings if not _sent_to_sites(key))
    if ignored:
        LOG.warning(
            "ignored settings the coordinator may not decide for this site: %s",
            ", ".join(ignored),
        )
    config = MedfedConfig.from_flat({k: v for k, v in settings.items() if _sent_to_sites(k)})
    return RoundSettings(config, server_round, proximal_mu, run_key)
