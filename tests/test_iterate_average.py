"""The served model: a moving average over rounds (strategy.ema-decay, server.iterate_average)."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord

from common.config import MedfedConfig
from common.errors import ConfigError
from server.iterate_average import IterateAverage
from server.recorder import RoundRecorder
from server.strategies import build_strategy
from tests._fed_helpers import FakeGrid, task_identity

__all__ = ["task_identity"]  # the fixture


def _arrays(weight: float, steps: int = 1) -> ArrayRecord:
    return ArrayRecord(
        {
            "conv.weight": Array(np.full((2, 3), weight, dtype=np.float32)),
            "bn.num_batches_tracked": Array(np.array(steps, dtype=np.int64)),
        }
    )


def _values(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    return {name: array.numpy() for name, array in arrays.items()}


def test_the_average_starts_at_the_first_global_model_and_mixes_in_each_round() -> None:
    average = IterateAverage(0.75)
    first = _values(average.fold(1, _arrays(4.0, steps=1)))
    np.testing.assert_array_equal(first["conv.weight"], np.full((2, 3), 4.0))
    second = _values(average.fold(2, _arrays(8.0, steps=2)))
    np.testing.assert_allclose(second["conv.weight"], 0.75 * 4.0 + 0.25 * 8.0)
    assert second["conv.weight"].dtype == np.float32
    # integer buffers (BatchNorm's step counter) take the latest iterate's value
    assert int(second["bn.num_batches_tracked"]) == 2
    third = _values(average.fold(3, _arrays(0.0, steps=3)))
    np.testing.assert_allclose(third["conv.weight"], 0.75 * 5.0)


def test_asking_twice_for_one_round_folds_it_in_once() -> None:
    average = IterateAverage(0.5)
    average.fold(1, _arrays(2.0))
    once = _values(average.fold(2, _arrays(4.0)))
    again = _values(average.fold(2, _arrays(4.0)))
    np.testing.assert_array_equal(once["conv.weight"], again["conv.weight"])
    np.testing.assert_allclose(again["conv.weight"], 3.0)


def test_decay_zero_serves_the_global_model_itself() -> None:
    average = IterateAverage(0.0)
    arrays = _arrays(1.0)
    assert average.fold(1, arrays) is arrays
    assert average.state() == {}


def test_a_restored_average_goes_on_as_if_never_interrupted() -> None:
    uninterrupted = IterateAverage(0.9)
    for server_round, weight in enumerate([1.0, 5.0, -3.0], start=1):
        expected = _values(uninterrupted.fold(server_round, _arrays(weight)))
    interrupted = IterateAverage(0.9)
    interrupted.fold(1, _arrays(1.0))
    interrupted.fold(2, _arrays(5.0))
    saved = interrupted.state()
    assert set(saved) == {"ema/conv.weight", "ema/bn.num_batches_tracked"}
    resumed = IterateAverage(0.9)
    resumed.restore({**saved, "momentum_vector/00000": np.zeros(1)}, last_round=2)
    got = _values(resumed.fold(3, _arrays(-3.0)))
    np.testing.assert_array_equal(got["conv.weight"], expected["conv.weight"])


@pytest.mark.usefixtures("task_identity")
def test_the_sites_are_sent_the_average_to_evaluate() -> None:
    config = MedfedConfig().replace(**{"strategy.ema-decay": 0.5, "federation.min-sites": 1})
    average = IterateAverage(config.strategy.ema_decay)
    recorder = RoundRecorder(listener=lambda record, arrays: None, average=average)
    strategy = build_strategy(config, recorder, average=average)
    average.fold(1, _arrays(2.0))
    (message,) = strategy.configure_evaluate(2, _arrays(6.0), ConfigRecord({}), FakeGrid([7]))
    sent = next(iter(message.content.array_records.values()))
    np.testing.assert_allclose(sent["conv.weight"].numpy(), 4.0)
    # the recorder scores the same served model after the round
    np.testing.assert_allclose(recorder.served(2, _arrays(6.0))["conv.weight"].numpy(), 4.0)


def test_secagg_refuses_a_moving_average_before_round_one() -> None:
    with pytest.raises(ConfigError, match=r"'strategy.ema-decay' = 0.9: is not possible with"):
        MedfedConfig().replace(
            **{"secagg.enabled": True, "validation.enabled": False, "strategy.ema-decay": 0.9}
        )
