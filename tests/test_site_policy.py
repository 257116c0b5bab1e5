"""A site's privacy policy (node config) declines runs that break it, before reading data."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.supercore.task_identity import TaskIdentity

from client.app import handle_train
from client.policy import SitePolicy
from client.site import SiteSources
from common import keys
from common.config import MedfedConfig
from common.errors import ConfigError
from common.params import model_to_arrays
from common.round_settings import encode_round_settings
from server.console import round_line
from server.recorder import RoundRecord
from tests._fed_helpers import FakeGrid, recording_strategy, task_identity
from tests.clientapp_harness import CapturingHarness

__all__ = ["task_identity"]  # the fixture, imported for pytest

NO_DP = {"privacy.enabled": False}


@pytest.fixture
def config(small_config: MedfedConfig) -> MedfedConfig:
    """Two planned rounds; RDP keeps the accountant fast in tests."""
    return small_config.replace(**{"privacy.accountant": "rdp"})


def _status(reply: Message) -> int:
    return int(reply.content[keys.METRICS][keys.TRAIN_STATUS])  # type: ignore[call-overload]


def _train(site: Path, config: MedfedConfig, **policy: object) -> Message:
    return CapturingHarness(site, config, node_extras=dict(policy)).train(1)  # type: ignore[arg-type]


# --- the site decides -------------------------------------------------------------------


def test_run_without_dp_is_declined_by_default_and_trained_where_the_site_allows_it(
    small_site: Path, config: MedfedConfig
) -> None:
    no_dp = config.replace(**NO_DP)

    strict = _train(small_site, no_dp)
    permissive = _train(small_site, no_dp, **{keys.NODE_REQUIRE_DP: "false"})

    assert _status(strict) == keys.STATUS_DECLINED_POLICY
    assert strict.content[keys.METRICS][keys.NUM_EXAMPLES] == 0
    assert _status(permissive) == keys.STATUS_TRAINED
    assert permissive.content[keys.METRICS][keys.NUM_EXAMPLES] > 0


def test_epsilon_above_the_site_maximum_is_declined_below_it_trained(
    small_site: Path, config: MedfedConfig
) -> None:
    high = config.replace(**{"privacy.target-epsilon": 8.0})
    low = config.replace(**{"privacy.target-epsilon": 2.0})

    declined = _train(small_site, high, **{keys.NODE_MAX_EPSILON: 4})
    trained = _train(small_site, low, **{keys.NODE_MAX_EPSILON: "4.0"})

    assert _status(declined) == keys.STATUS_DECLINED_POLICY
    assert _status(trained) == keys.STATUS_TRAINED


@pytest.mark.parametrize(
    ("run", "policy"),
    [
        ({"privacy.delta": 1e-4}, {keys.NODE_MAX_DELTA: 1e-5}),
        ({"federation.num-rounds": 5}, {keys.NODE_MAX_ROUNDS: 3}),
        ({"privacy.noise-multiplier": 0.5}, {keys.NODE_MIN_NOISE_MULTIPLIER: 1.0}),
        # noise derived from the target epsilon: checked once the site has planned its round
        ({"privacy.target-epsilon": 8.0}, {keys.NODE_MIN_NOISE_MULTIPLIER: 50.0}),
    ],
    ids=["max-delta", "max-rounds", "min-noise-explicit", "min-noise-calibrated"],
)
def test_each_policy_bound_declines_a_run_that_breaks_it(
    small_site: Path, config: MedfedConfig, run: dict[str, object], policy: dict[str, object]
) -> None:
    reply = _train(small_site, config.replace(**run), **policy)

    assert _status(reply) == keys.STATUS_DECLINED_POLICY
    assert reply.content[keys.METRICS][keys.NUM_EXAMPLES] == 0


def test_declined_reply_carries_the_global_model_and_only_allowed_scalars(
    small_site: Path, config: MedfedConfig, caplog: pytest.LogCaptureFixture
) -> None:
    harness = CapturingHarness(small_site, config, node_extras={keys.NODE_MAX_ROUNDS: 1})

    with caplog.at_level(logging.WARNING, logger="medfed.client"):
        reply = harness.train(1)

    metrics = reply.content[keys.METRICS]
    assert set(metrics) <= keys.TRAIN_METRICS_ALLOWED
    assert all(isinstance(v, int | float) for v in metrics.values())
    sent = model_to_arrays(harness.global_model())
    for name, array in reply.content[keys.ARRAYS].items():
        np.testing.assert_array_equal(array.numpy(), sent[name].numpy())
    assert "max-rounds" in caplog.text  # the full reason stays in the site's log
    assert str(small_site) not in caplog.text


# --- before any data is read ----------------------------------------------------------


def test_policy_decline_happens_before_the_data_folder_is_read(
    tmp_path: Path, config: MedfedConfig
) -> None:
    missing = tmp_path / "no-such-folder"  # reading it would be an error reply

    reply = _train(missing, config.replace(**NO_DP))

    assert _status(reply) == keys.STATUS_DECLINED_POLICY


class _NoReads(SiteSources):
    def load(self, node_config, config):  # type: ignore[no-untyped-def]
        raise AssertionError("site data was read")


def test_policy_decline_never_calls_the_site_sources(
    small_site: Path, config: MedfedConfig
) -> None:
    harness = CapturingHarness(small_site, config.replace(**{"privacy.target-epsilon": 9.0}))
    content = RecordDict(
        {
            keys.ARRAYS: model_to_arrays(harness.global_model()),
            keys.CONFIG: ConfigRecord(
                {**encode_round_settings(harness.config, "run"), keys.SERVER_ROUND: 1}
            ),
        }
    )
    context = Context(
        run_id=1,
        node_id=7,
        node_config={**harness.context.node_config, keys.NODE_MAX_EPSILON: 1.0},
        state=RecordDict(),
        run_config={},
    )

    reply = handle_train(content, context, _NoReads.create())

    assert reply[keys.METRICS][keys.TRAIN_STATUS] == keys.STATUS_DECLINED_POLICY  # type: ignore[index]


def test_evaluate_of_a_refused_run_is_a_redacted_error_without_reading_data(
    tmp_path: Path, config: MedfedConfig
) -> None:
    harness = CapturingHarness(tmp_path / "no-such-folder", config.replace(**NO_DP))
    settings = ConfigRecord({**encode_round_settings(harness.config, "1"), keys.SERVER_ROUND: 1})
    content = RecordDict(
        {keys.ARRAYS: model_to_arrays(harness.global_model()), keys.CONFIG: settings}
    )
    message = Message(content=content, dst_node_id=7, message_type=MessageType.EVALUATE)

    reply = harness.app(message, harness.context)

    assert reply.has_error()
    assert reply.error.reason.startswith("ConfigError at the site")
    assert "require-dp" not in reply.error.reason  # the reason stays at the site


def test_simulated_node_without_a_data_path_trains_a_run_without_dp(
    small_site: Path, config: MedfedConfig, tmp_path: Path
) -> None:
    no_dp = config.replace(**NO_DP)
    harness = CapturingHarness(small_site, no_dp)
    content = RecordDict(
        {
            keys.ARRAYS: model_to_arrays(harness.global_model()),
            keys.CONFIG: ConfigRecord(
                {**encode_round_settings(no_dp, "sim"), keys.SERVER_ROUND: 1}
            ),
        }
    )
    node_config = {keys.NODE_PARTITION_ID: 0, keys.NODE_STATE_DIR: str(tmp_path / "state")}
    context = Context(
        run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config={}
    )

    reply = handle_train(content, context, SiteSources.create())

    assert reply[keys.METRICS][keys.TRAIN_STATUS] == keys.STATUS_TRAINED  # type: ignore[index]


# --- the coordinator cannot override ---------------------------------------------------


def test_round_settings_carry_no_policy_keys(config: MedfedConfig) -> None:
    sent = encode_round_settings(config, "run")

    names = {key.rpartition(".")[2] for key in sent}
    assert not names & keys.POLICY_KEYS


@pytest.mark.parametrize("key", [*sorted(keys.POLICY_KEYS), "privacy.require-dp"])
def test_run_config_cannot_set_a_policy_key(key: str) -> None:
    with pytest.raises(ConfigError, match="unknown config key"):
        MedfedConfig.from_flat({key: False})


def test_policy_key_smuggled_into_the_round_settings_is_ignored(
    small_site: Path, config: MedfedConfig
) -> None:
    harness = CapturingHarness(small_site, config.replace(**NO_DP))
    settings = {
        **encode_round_settings(harness.config, "1"),
        keys.SERVER_ROUND: 1,
        keys.NODE_REQUIRE_DP: False,
    }
    content = RecordDict(
        {keys.ARRAYS: model_to_arrays(harness.global_model()), keys.CONFIG: ConfigRecord(settings)}
    )
    message = Message(content=content, dst_node_id=7, message_type=MessageType.TRAIN)

    reply = harness.app(message, harness.context)

    assert _status(reply) == keys.STATUS_DECLINED_POLICY


# --- reading the node config -----------------------------------------------------------


def test_policy_values_are_read_from_toml_types_and_strings() -> None:
    policy = SitePolicy.from_node_config(
        {
            keys.NODE_DATA_PATH: "/data/site",
            keys.NODE_REQUIRE_DP: "no",
            keys.NODE_MAX_EPSILON: "4",
            keys.NODE_MAX_DELTA: 1e-5,
            keys.NODE_MIN_NOISE_MULTIPLIER: 1,
            keys.NODE_MAX_ROUNDS: 20.0,
        }
    )

    assert policy == SitePolicy(False, 4.0, 1e-5, 1.0, 20)


def test_dp_is_required_at_a_real_site_by_default_not_at_a_simulated_node() -> None:
    assert SitePolicy.from_node_config({keys.NODE_DATA_PATH: "/data/site"}).require_dp
    assert not SitePolicy.from_node_config({keys.NODE_PARTITION_ID: 0}).require_dp


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (keys.NODE_REQUIRE_DP, "maybe"),
        (keys.NODE_MAX_EPSILON, -1),
        (keys.NODE_MAX_EPSILON, "lots"),
        (keys.NODE_MAX_DELTA, 1.5),
        (keys.NODE_MIN_NOISE_MULTIPLIER, True),
        (keys.NODE_MAX_ROUNDS, 2.5),
        (keys.NODE_MAX_ROUNDS, 0),
    ],
)
def test_bad_policy_value_is_a_one_line_error_naming_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError) as excinfo:
        SitePolicy.from_node_config({keys.NODE_DATA_PATH: "/data/site", key: value})

    message = str(excinfo.value)
    assert "\n" not in message
    assert f"node config '{key}'" in message
    assert repr(value) in message
    assert "expected" in message


# --- the server names the reason ------------------------------------------------------


def _reply(site: int, status: int) -> Message:
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    examples = 10 if status == keys.STATUS_TRAINED else 0
    content = RecordDict(
        {
            keys.ARRAYS: ArrayRecord({"w": Array(np.full(3, 1.0 + site, dtype=np.float32))}),
            keys.METRICS: MetricRecord(
                {
                    keys.NUM_EXAMPLES: examples,
                    keys.SITE_INDEX: site,
                    keys.TRAIN_LOSS: 0.5 if examples else 0.0,
                    keys.TRAIN_STATUS: status,
                }
            ),
        }
    )
    return Message(content=content, dst_node_id=site + 1, message_type=MessageType.TRAIN)


@pytest.mark.usefixtures("task_identity")
def test_server_names_sites_declined_by_policy_and_by_budget(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrapped, recorder, recorded = recording_strategy()
    global_model = ArrayRecord({"w": Array(np.zeros(3, dtype=np.float32))})
    list(wrapped.configure_train(2, global_model, ConfigRecord({}), FakeGrid([1, 2, 3])))
    replies = [
        _reply(0, keys.STATUS_TRAINED),
        _reply(1, keys.STATUS_DECLINED_BUDGET),
        _reply(2, keys.STATUS_DECLINED_POLICY),
    ]

    with caplog.at_level(logging.WARNING, logger="medfed.server"):
        arrays, _ = wrapped.aggregate_train(2, replies)
    recorder.end_round(2, arrays)  # type: ignore[arg-type]

    (record,) = recorded
    assert record.train_sites == ["hospital-a"]
    assert record.declined_sites == ["hospital-b", "hospital-c"]
    assert record.declined == {"hospital-b": "privacy budget", "hospital-c": "site policy"}
    assert RoundRecord.from_json(record.to_json()).declined == record.declined
    line = round_line(record, 3)
    assert "declined (privacy budget) [hospital-b]" in line
    assert "declined (site policy) [hospital-c]" in line
    assert "round 2: hospital-c declined to train: site policy" in caplog.text
