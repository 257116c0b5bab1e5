"""The server logs sites that decline a round (privacy budget), aggregates the others and
keeps going; declined sites are listed with their spent epsilon."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord

from common import keys
from common.config import MedfedConfig
from server.recorder import RoundRecord, RoundRecorder
from server.strategies import build_strategy
from tests._fed_helpers import FakeGrid, reply, task_identity, train_content

__all__ = ["task_identity"]  # the fixture, imported for pytest

NODES = [21, 22, 23]


def _arrays(value: float) -> ArrayRecord:
    return ArrayRecord({"w": Array(np.full(3, value, dtype=np.float32))})


def _trained(value: float, site: int, examples: int, eps: float):
    content = train_content(
        _arrays(value),
        site,
        num_examples=examples,
        **{keys.TRAIN_STATUS: keys.STATUS_TRAINED, keys.EPSILON: eps},
    )
    return reply(content, NODES[site])


def _declined(site: int, eps: float):
    content = train_content(
        _arrays(0.0),  # the global model, sent back unchanged
        site,
        num_examples=0,
        **{keys.TRAIN_STATUS: keys.STATUS_DECLINED_BUDGET, keys.EPSILON: eps},
    )
    return reply(content, NODES[site])


@pytest.fixture
def recorded() -> list[RoundRecord]:
    return []


def _strategy(recorded: list[RoundRecord], strategy: str = "fedavg", min_sites: int = 1):
    recorder = RoundRecorder(listener=lambda record, arrays: recorded.append(record))
    config = MedfedConfig().replace(
        **{
            "strategy.name": strategy,
            "federation.num-sites": 3,
            "federation.min-sites": min_sites,
        }
    )
    guarded = build_strategy(config, recorder)
    list(guarded.configure_train(1, _arrays(0.0), ConfigRecord({}), FakeGrid(NODES)))
    return guarded, recorder


@pytest.mark.usefixtures("task_identity")
@pytest.mark.parametrize("strategy", ["fedavg", "fedmedian"])
def test_declined_site_is_left_out_of_aggregation_and_recorded(
    recorded: list[RoundRecord], caplog: pytest.LogCaptureFixture, strategy: str
) -> None:
    guarded, recorder = _strategy(recorded, strategy)
    replies = [_trained(1.0, 0, 10, 3.0), _trained(3.0, 1, 30, 2.0), _declined(2, 8.0)]

    with caplog.at_level(logging.WARNING, logger="medfed.server"):
        arrays, metrics = guarded.aggregate_train(1, replies)
    recorder.end_round(1, arrays)  # type: ignore[arg-type]

    assert arrays is not None and metrics is not None
    # FedAvg (10 * 1 + 30 * 3) / 40; the median of {1, 3} (a median over all three would be 1)
    np.testing.assert_allclose(arrays["w"].numpy(), 2.5 if strategy == "fedavg" else 2.0)
    assert "round 1: hospital-c declined to train" in caplog.text
    (record,) = recorded
    assert record.train_sites == ["hospital-a", "hospital-b"]
    assert record.declined_sites == ["hospital-c"]
    assert record.failed == {} and record.rejected == {}
    assert record.epsilon == {"hospital-a": 3.0, "hospital-b": 2.0, "hospital-c": 8.0}
    assert record.epsilon_max == 8.0
    assert record.to_json()["declined_sites"] == ["hospital-c"]


@pytest.mark.usefixtures("task_identity")
def test_round_where_every_site_declines_keeps_the_global_model(
    recorded: list[RoundRecord],
) -> None:
    guarded, recorder = _strategy(recorded)
    replies = [_declined(site, 8.0) for site in range(3)]

    assert guarded.aggregate_train(1, replies) == (None, None)
    recorder.end_round(1, _arrays(0.0))

    (record,) = recorded
    assert not record.aggregated
    assert record.declined_sites == ["hospital-a", "hospital-b", "hospital-c"]
