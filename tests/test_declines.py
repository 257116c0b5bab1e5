"""The server logs declining sites, aggregates the others and keeps going."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.task_identity import TaskIdentity

from common import keys
from common.config import ValidationConfig
from server.guarded import GuardedStrategy
from server.recorder import RoundRecord, RoundRecorder
from tests._fed_helpers import FakeGrid, task_identity

__all__ = ["task_identity"]  # the fixture, imported for pytest


def _reply(site: int, weights: float, examples: int, status: int, eps: float) -> Message:
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    content = RecordDict(
        {
            keys.ARRAYS: ArrayRecord({"w": Array(np.full(3, weights, dtype=np.float32))}),
            keys.METRICS: MetricRecord(
                {
                    keys.NUM_EXAMPLES: examples,
                    keys.SITE_INDEX: site,
                    keys.TRAIN_LOSS: 0.5 if examples else 0.0,
                    keys.TRAIN_STATUS: status,
                    keys.EPSILON: eps,
                }
            ),
        }
    )
    return Message(content=content, dst_node_id=site + 1, message_type=MessageType.TRAIN)


@pytest.fixture
def recorded() -> list[RoundRecord]:
    return []


@pytest.fixture
def strategy(recorded: list[RoundRecord]) -> tuple[GuardedStrategy, RoundRecorder]:
    recorder = RoundRecorder(listener=lambda record, arrays: recorded.append(record))
    inner = FedAvg(train_metrics_aggr_fn=recorder.aggregate_train)
    guarded = GuardedStrategy(
        inner,
        validation=ValidationConfig(),
        min_replies=1,
        on_participation=recorder.record_participation,
        on_declined=recorder.record_declined,
    )
    return guarded, recorder


@pytest.mark.usefixtures("task_identity")
def test_declined_site_is_left_out_of_the_average_and_recorded(
    strategy: tuple[GuardedStrategy, RoundRecorder],
    recorded: list[RoundRecord],
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrapped, recorder = strategy
    global_model = ArrayRecord({"w": Array(np.zeros(3, dtype=np.float32))})
    list(wrapped.configure_train(4, global_model, ConfigRecord({}), FakeGrid([1, 2, 3])))
    replies = [
        _reply(0, 1.0, 10, keys.STATUS_TRAINED, 3.0),
        _reply(1, 3.0, 30, keys.STATUS_TRAINED, 2.0),
        _reply(2, 100.0, 0, keys.STATUS_DECLINED_BUDGET, 8.0),
    ]

    with caplog.at_level(logging.WARNING, logger="medfed.server"):
        arrays, metrics = wrapped.aggregate_train(4, replies)
    recorder.end_round(4, arrays)  # type: ignore[arg-type]

    assert arrays is not None and metrics is not None
    np.testing.assert_allclose(arrays["w"].numpy(), 2.5)  # (10 * 1 + 30 * 3) / 40
    assert "round 4: hospital-c declined to train" in caplog.text
    (record,) = recorded
    assert record.train_sites == ["hospital-a", "hospital-b"]
    assert record.declined_sites == ["hospital-c"]
    assert record.epsilon == {"hospital-a": 3.0, "hospital-b": 2.0, "hospital-c": 8.0}
    assert record.epsilon_max == 8.0
    assert record.to_json()["declined_sites"] == ["hospital-c"]


@pytest.mark.usefixtures("task_identity")
def test_round_where_every_site_declines_keeps_the_global_model(
    strategy: tuple[GuardedStrategy, RoundRecorder],
) -> None:
    wrapped, _ = strategy
    global_model = ArrayRecord({"w": Array(np.zeros(3, dtype=np.float32))})
    list(wrapped.configure_train(9, global_model, ConfigRecord({}), FakeGrid([1, 2])))
    replies = [_reply(i, 1.0, 0, keys.STATUS_DECLINED_BUDGET, 8.0) for i in range(2)]

    assert wrapped.aggregate_train(9, replies) == (None, None)
