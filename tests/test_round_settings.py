"""Round settings: what the coordinator may send a site, decoded once; SecAgg+ refusals.

A site receives only the settings that shape its local work (never where its cache lives,
never the server's strategy or run directory), decodes them through one function, and takes
site-local values from its own node config. Both round engines send the same settings with
the same run key, so a site books its privacy spend the same way with and without SecAgg+.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from rich.console import Console

from common import keys
from common.config import MedfedConfig
from common.errors import ConfigError
from common.models import build_model
from common.params import model_to_arrays
from common.round_settings import SITE_LOCAL_KEYS, decode_round_settings, encode_round_settings
from server.lifecycle import RunLifecycle
from server.secagg import SecAggFedAvg
from tests.clientapp_harness import CapturingHarness


def test_sites_get_the_round_settings_only_never_site_local_or_server_keys() -> None:
    config = MedfedConfig().replace(**{"data.cache-dir": "/coordinator/cache"})

    sent = encode_round_settings(config, "20261130-demo")

    assert sent[keys.RUN_KEY] == "20261130-demo"
    assert not SITE_LOCAL_KEYS & sent.keys()
    for section in ("strategy.", "validation.", "simulation.", "secagg.enabled", "run.run"):
        assert not [key for key in sent if key.startswith(section)], section
    for needed in ("data.image-size", "privacy.target-epsilon", "federation.num-rounds"):
        assert sent[needed] == config.to_flat()[needed]
    assert sent["run.seed"] == config.run.seed


def test_decoding_ignores_site_local_values_from_the_coordinator_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sent = {
        **encode_round_settings(MedfedConfig(), "run-a"),
        keys.SERVER_ROUND: 3,
        "data.cache-dir": "/coordinator/cache",
        "strategy.name": "fedavg",
    }

    with caplog.at_level(logging.WARNING, logger="medfed.client"):
        settings = decode_round_settings(sent)

    assert settings.server_round == 3 and settings.run_key == "run-a"
    assert settings.config.data.cache_dir == ""  # the default: the site decides
    assert "data.cache-dir" in caplog.text and "strategy.name" in caplog.text


def test_a_bad_round_setting_is_refused_at_the_site_naming_it() -> None:
    sent = {**encode_round_settings(MedfedConfig(), "run-a"), "train.batch-size": 0}

    with pytest.raises(ConfigError, match=r"'train.batch-size' = 0"):
        decode_round_settings(sent)


def test_the_site_caches_where_its_node_config_says_not_where_the_run_config_says(
    small_site: Path, small_config: MedfedConfig, tmp_path: Path
) -> None:
    # Prepare: the coordinator's settings name a cache folder; the site names its own
    coordinator_cache = tmp_path / "coordinator-cache"
    site_cache = tmp_path / "site-cache"
    config = small_config.replace(**{"data.cache-dir": str(coordinator_cache)})
    harness = CapturingHarness(
        small_site, config, node_extras={keys.NODE_CACHE_DIR: str(site_cache)}
    )
    content = RecordDict(
        {
            keys.ARRAYS: model_to_arrays(harness.global_model()),
            keys.CONFIG: ConfigRecord(
                {**config.to_flat(), keys.SERVER_ROUND: 1}  # everything, as an old server did
            ),
        }
    )

    # Execute
    reply = harness.app(
        Message(content=content, dst_node_id=7, message_type=MessageType.EVALUATE),
        harness.context,
    )

    # Assert
    assert not reply.has_error()
    assert any(site_cache.rglob("*")), "the site's own cache folder was used"
    assert not coordinator_cache.exists()


def _secagg_config(tmp_path: Path) -> MedfedConfig:
    return MedfedConfig().replace(
        **{
            "secagg.enabled": True,
            "validation.enabled": False,
            "run.run-dir": str(tmp_path / "run-x"),
        }
    )


def test_secagg_and_plain_rounds_send_the_same_settings_and_run_key(tmp_path: Path) -> None:
    config = _secagg_config(tmp_path)
    lifecycle = RunLifecycle(config, Console(quiet=True))
    initial = model_to_arrays(build_model(config.model, config.data.channels))

    secagg = SecAggFedAvg(
        config, lifecycle.recorder, initial, lifecycle.round_settings(), round_offset=2
    )
    sent = secagg.on_fit_config_fn(1)  # the workflow's first round of a run resumed after 2

    assert sent[keys.RUN_KEY] == lifecycle.run_key and lifecycle.run_key.startswith("run-x-")
    assert sent[keys.SERVER_ROUND] == 3
    plain = encode_round_settings(config.replace(**{"secagg.enabled": False}), lifecycle.run_key)
    assert {k: v for k, v in sent.items() if k != keys.SERVER_ROUND} == plain
    decoded = decode_round_settings(sent)
    assert decoded.run_key == lifecycle.run_key and decoded.server_round == 3


def test_runs_in_directories_of_the_same_name_get_their_own_privacy_key(tmp_path: Path) -> None:
    """Regression: the key was the directory's name, so a new run with ``run.run-dir`` =
    ``.../seed-0`` was booked under an older ``seed-0`` run's spend at every site (its first
    round showed the old run's epsilon, 7.99 of 8) and its sites re-planned their noise."""
    quiet = Console(quiet=True)
    first = MedfedConfig().replace(**{"run.run-dir": str(tmp_path / "old" / "seed-0")})
    second = first.replace(**{"run.run-dir": str(tmp_path / "new" / "seed-0")})
    key_first = RunLifecycle(first, quiet).run_key
    key_second = RunLifecycle(second, quiet).run_key
    assert key_first != key_second
    assert key_first.startswith("seed-0-") and key_second.startswith("seed-0-")
    resumed = RunLifecycle(first.replace(**{"run.resume": True}), quiet)
    assert resumed.run_key == key_first  # a resumed run keeps booking under its own key


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"strategy.name": "fedmedian"}, "strategy.name"),
        ({"strategy.name": "krum"}, "strategy.name"),
        ({"strategy.name": "fedadam"}, "strategy.name"),
        ({"validation.enabled": True}, "validation.enabled"),
    ],
)
def test_settings_secagg_cannot_honour_are_refused_in_one_line(
    tmp_path: Path, override: dict, key: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        _secagg_config(tmp_path).replace(**override)

    message = str(refused.value)
    assert "\n" not in message
    assert f"config key '{key}'" in message and "secagg.enabled=true" in message


def test_the_site_cache_switch_comes_from_node_config_and_a_bad_value_is_refused() -> None:
    from client.site import site_data_config
    from common.config import DataConfig

    assert site_data_config({keys.NODE_CACHE: "false"}, DataConfig()).cache is False
    assert site_data_config({keys.NODE_CACHE: True, keys.NODE_CACHE_DIR: "/c"}, DataConfig()) == (
        DataConfig(cache=True, cache_dir="/c")
    )
    with pytest.raises(ConfigError, match=r"node config 'cache' = 'maybe'"):
        site_data_config({keys.NODE_CACHE: "maybe"}, DataConfig())
