"""Strategy factory and GuardedStrategy: validation, dropouts, ordering, optimiser state."""

from __future__ import annotations

import random

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord
from flwr.serverapp.strategy import (
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    MultiKrum,
)

from common.config import STRATEGY_NAMES, MedfedConfig
from common.errors import ConfigError
from server.guarded import short_reason
from server.recorder import RoundRecord, RoundRecorder
from server.strategies import (
    STRATEGY_DESCRIPTIONS,
    STRATEGY_REGISTRY,
    build_strategy,
    load_strategy_state,
    strategy_state,
)
from simulations.dropout import drops_out
from tests._fed_helpers import FakeGrid, error_reply, reply, task_identity, train_content

__all__ = ["task_identity"]  # the fixture, imported for pytest

NODES = [11, 12, 13, 14, 15]
GLOBAL = {"w": np.zeros((3, 2), dtype=np.float32), "b": np.zeros(2, dtype=np.float32)}


def _config(**overrides) -> MedfedConfig:
    base = {"federation.num-sites": 5, "federation.min-sites": 2}
    return MedfedConfig().replace(**{**base, **overrides})


def _arrays(shift: float, site: int) -> ArrayRecord:
    rng = np.random.default_rng(site)
    return ArrayRecord(
        {
            name: Array((value + shift + 0.01 * rng.normal(size=value.shape)).astype(np.float32))
            for name, value in GLOBAL.items()
        }
    )


def _global() -> ArrayRecord:
    return ArrayRecord({name: Array(value.copy()) for name, value in GLOBAL.items()})


class Captured:
    """A recorder listener keeping the round records."""

    def __init__(self) -> None:
        self.records: list[RoundRecord] = []

    def __call__(self, record: RoundRecord, arrays: ArrayRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize(
    ("name", "flower_class"),
    [
        ("fedavg", FedAvg),
        ("fedprox", FedProx),
        ("fedavgm", FedAvgM),
        ("fedadam", FedAdam),
        ("fedyogi", FedYogi),
        ("fedmedian", FedMedian),
        ("fedtrimmedavg", FedTrimmedAvg),
        ("krum", Krum),
        ("multikrum", MultiKrum),
    ],
)
def test_factory_builds_flowers_own_strategy_with_medfed_hooks(name: str, flower_class) -> None:
    recorder = RoundRecorder(listener=Captured())
    strategy = build_strategy(_config(**{"strategy.name": name}), recorder)
    assert type(strategy.inner) is flower_class
    assert strategy.inner.train_metrics_aggr_fn == recorder.aggregate_train
    assert strategy.inner.evaluate_metrics_aggr_fn == recorder.aggregate_evaluate
    assert set(STRATEGY_REGISTRY) >= {name}


def test_factory_passes_settings_and_rejects_bad_ones() -> None:
    recorder = RoundRecorder(listener=Captured())
    prox = build_strategy(
        _config(**{"strategy.name": "fedprox", "strategy.proximal-mu": 0.3}), recorder
    )
    assert prox.inner.proximal_mu == 0.3
    multi = build_strategy(_config(**{"strategy.name": "multikrum"}), recorder)
    assert (multi.inner.num_malicious_nodes, multi.inner.num_nodes_to_select) == (1, 4)
    # bad names and values never reach the factory: the config refuses them
    with pytest.raises(ConfigError, match=r"'strategy\.name' = 'fedsgd': expected one of fedavg"):
        _config(**{"strategy.name": "fedsgd"})
    with pytest.raises(ConfigError, match=r"'strategy.trim-beta' = 0.5: must be in \[0, 0.5\)"):
        _config(**{"strategy.trim-beta": 0.5})
    with pytest.raises(ConfigError, match=r"'federation\.min-sites' = 6: must be at most"):
        _config(**{"federation.min-sites": 6})


def test_registry_implements_exactly_the_names_the_config_allows() -> None:
    assert tuple(STRATEGY_REGISTRY) == STRATEGY_NAMES
    assert set(STRATEGY_DESCRIPTIONS) == set(STRATEGY_NAMES)


@pytest.mark.usefixtures("task_identity")
def test_round_goes_on_without_failed_silent_and_rejected_sites() -> None:
    # Prepare: five sites sampled; a fails, b never answers, c sends NaN, d and e are fine
    captured = Captured()
    recorder = RoundRecorder(listener=captured)
    strategy = build_strategy(_config(), recorder)
    sent = list(strategy.configure_train(1, _global(), ConfigRecord({}), FakeGrid(NODES)))
    assert sorted(m.metadata.dst_node_id for m in sent) == NODES
    nan = _arrays(0.1, 2)
    nan["w"] = Array(np.full((3, 2), np.nan, dtype=np.float32))
    replies = [
        error_reply(11, "ClientApp raised: out of memory"),
        reply(train_content(nan, 2, num_examples=50), 13),
        reply(train_content(_arrays(0.1, 3), 3, num_examples=100), 14),
        reply(train_content(_arrays(0.3, 4), 4, num_examples=300), 15),
    ]
    # Execute
    arrays, _ = strategy.aggregate_train(1, replies)
    recorder.end_round(1, arrays)
    # Assert: FedAvg of d and e only (weights 100 : 300)
    expected = 0.25 * _arrays(0.1, 3)["w"].numpy() + 0.75 * _arrays(0.3, 4)["w"].numpy()
    np.testing.assert_allclose(arrays["w"].numpy(), expected, rtol=1e-6)
    record = captured.records[0]
    assert record.train_sites == ["hospital-d", "hospital-e"]
    assert record.rejected == {"hospital-c": "array 'w' has non-finite values (NaN or inf)"}
    assert record.failed == {
        "node 11": "ClientApp raised: out of memory",
        "node 12": "no reply before the round timeout",
    }
    assert record.aggregated


@pytest.mark.usefixtures("task_identity")
def test_too_few_valid_updates_keep_the_global_model_and_say_so() -> None:
    captured = Captured()
    recorder = RoundRecorder(listener=captured)
    strategy = build_strategy(_config(**{"federation.min-sites": 3}), recorder)
    list(strategy.configure_train(1, _global(), ConfigRecord({}), FakeGrid(NODES)))
    replies = [reply(train_content(_arrays(0.1, s), s), NODES[s]) for s in (0, 1)]
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is None and metrics is None
    recorder.end_round(1, _global())
    assert not captured.records[0].aggregated
    assert captured.records[0].train_sites == ["hospital-a", "hospital-b"]


@pytest.mark.usefixtures("task_identity")
def test_failed_site_is_named_once_it_has_been_seen() -> None:
    recorder = RoundRecorder(listener=Captured())
    strategy = build_strategy(_config(), recorder)
    grid = FakeGrid(NODES[:3])
    list(strategy.configure_train(1, _global(), ConfigRecord({}), grid))
    strategy.aggregate_train(
        1, [reply(train_content(_arrays(0.1, s), s), NODES[s]) for s in range(3)]
    )
    recorder.end_round(1, _global())
    list(strategy.configure_train(2, _global(), ConfigRecord({}), grid))
    replies = [reply(train_content(_arrays(0.1, s), s), NODES[s], 2) for s in (0, 2)]
    strategy.aggregate_train(2, [*replies, error_reply(NODES[1], "site crashed", 2)])
    assert recorder._participation.failed == {"hospital-b": "site crashed"}


@pytest.mark.parametrize("name", ["fedavg", "fedmedian", "krum", "fedadam"])
@pytest.mark.usefixtures("task_identity")
def test_aggregate_does_not_depend_on_reply_order(name: str) -> None:
    results = []
    for order_seed in range(3):
        strategy = build_strategy(_config(**{"strategy.name": name}), RoundRecorder(Captured()))
        list(strategy.configure_train(1, _global(), ConfigRecord({}), FakeGrid(NODES)))
        replies = [
            reply(train_content(_arrays(0.1 * (s + 1), s), s, num_examples=37 + s), NODES[s])
            for s in range(5)
        ]
        random.Random(order_seed).shuffle(replies)
        arrays, _ = strategy.aggregate_train(1, replies)
        results.append({k: v.numpy().tobytes() for k, v in arrays.items()})
    assert results[0] == results[1] == results[2]


@pytest.mark.usefixtures("task_identity")
def test_krum_round_still_lists_every_site_that_took_part() -> None:
    captured = Captured()
    recorder = RoundRecorder(listener=captured)
    strategy = build_strategy(_config(**{"strategy.name": "krum"}), recorder)
    list(strategy.configure_train(1, _global(), ConfigRecord({}), FakeGrid(NODES)))
    replies = [reply(train_content(_arrays(0.1, s), s), NODES[s]) for s in range(5)]
    arrays, _ = strategy.aggregate_train(1, replies)
    recorder.end_round(1, arrays)
    assert captured.records[0].train_sites == [f"hospital-{s}" for s in "abcde"]


@pytest.mark.parametrize("name", ["fedadam", "fedyogi", "fedavgm"])
@pytest.mark.usefixtures("task_identity")
def test_optimiser_state_survives_a_checkpoint_round_trip(name: str) -> None:
    config = _config(**{"strategy.name": name})

    def run_round(strategy, server_round: int, arrays: ArrayRecord) -> ArrayRecord:
        list(strategy.configure_train(server_round, arrays, ConfigRecord({}), FakeGrid(NODES)))
        replies = [
            reply(
                train_content(_arrays(0.05 * server_round * (s + 1), s), s), NODES[s], server_round
            )
            for s in range(5)
        ]
        new, _ = strategy.aggregate_train(server_round, replies)
        return new

    original = build_strategy(config, RoundRecorder(Captured()))
    after_one = run_round(original, 1, _global())
    state = strategy_state(original.inner)
    assert state, "a server optimiser must have state after one round"
    resumed = build_strategy(config, RoundRecorder(Captured()))
    load_strategy_state(resumed.inner, {k: v.copy() for k, v in state.items()})
    fresh = build_strategy(config, RoundRecorder(Captured()))
    # Execute: round 2 on the original, the restored and a stateless strategy
    expected = run_round(original, 2, after_one)
    restored = run_round(resumed, 2, after_one)
    forgetful = run_round(fresh, 2, after_one)
    # Assert
    for key in GLOBAL:
        np.testing.assert_array_equal(restored[key].numpy(), expected[key].numpy())
        assert expected[key].dtype == "float32"  # FedAdam's float64 output is cast back
    assert any(not np.array_equal(forgetful[k].numpy(), expected[k].numpy()) for k in GLOBAL)


def test_failure_reasons_are_cut_to_their_informative_line() -> None:
    ray_text = (
        "<class 'ray.exceptions.RayTaskError(ClientAppException)'>:<'ray::ClientAppActor.run()\n"
        '  File "x.py", line 65, in run\n    raise ClientAppException(str(ex)) from ex\n'
        "Exception ClientAppException occurred. Message: simulated failure of site 3 in round 2'>"
    )
    assert short_reason(ray_text) == "simulated failure of site 3 in round 2"
    assert short_reason("") == "unknown error"
    assert len(short_reason("x" * 1000)) == 200


def test_simulation_waits_for_every_site_before_sampling() -> None:
    recorder = RoundRecorder(listener=Captured())
    config = _config(**{"federation.min-available": 5})
    assert build_strategy(config, recorder).inner.min_available_nodes == 5
    assert build_strategy(_config(), recorder).inner.min_available_nodes == 2


def test_dropouts_are_deterministic_and_near_the_configured_rate() -> None:
    draws = [
        drops_out(0.2, 0, site, server_round)
        for site in range(100)
        for server_round in range(1, 21)
    ]
    assert draws == [drops_out(0.2, 0, s, r) for s in range(100) for r in range(1, 21)]
    assert 0.17 < sum(draws) / len(draws) < 0.23
    assert not any(drops_out(0.0, 0, site, 1) for site in range(100))


@pytest.mark.parametrize("name", ["fedavgm", "fedadam"])
@pytest.mark.usefixtures("task_identity")
def test_a_cosine_server_lr_schedule_sets_the_rate_each_round_aggregates_with(name: str) -> None:
    # Round 6 of 10 is half-way along the cosine: the rate is half of strategy.server-lr, so
    # (momentum 0, from a zero global model) the step is half the constant schedule's.
    def round_six(schedule: str) -> np.ndarray:
        config = _config(
            **{
                "strategy.name": name,
                "strategy.server-lr": 1.0,
                "strategy.server-momentum": 0.0,
                "strategy.server-lr-schedule": schedule,
                "federation.num-rounds": 10,
            }
        )
        strategy = build_strategy(config, RoundRecorder(Captured()))
        list(strategy.configure_train(6, _global(), ConfigRecord({}), FakeGrid(NODES)))
        replies = [reply(train_content(_arrays(0.2, s), s), NODES[s], 6) for s in range(5)]
        arrays, _ = strategy.aggregate_train(6, replies)
        return arrays["w"].numpy()

    constant, cosine = round_six("constant"), round_six("cosine")

    # FedAvgM's step is rate x update; FedAdam's is eta x m / (sqrt(v) + tau): both linear
    np.testing.assert_allclose(cosine, 0.5 * constant, rtol=1e-5)
    assert np.abs(constant).max() > 0.01


def test_a_server_lr_schedule_is_refused_for_a_strategy_without_a_server_rate() -> None:
    with pytest.raises(ConfigError, match=r"strategy\.server-lr-schedule"):
        _config(**{"strategy.name": "fedavg", "strategy.server-lr-schedule": "cosine"})
