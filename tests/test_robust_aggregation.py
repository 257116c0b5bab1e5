"""Robust strategies keep the aggregate near the clean one when validation is switched off.

Five sites send updates around a common direction; site c sends the same update scaled by
1000 or sign-flipped. With ``validation.enabled = false`` only the aggregation rule stands
between the attacker and the global model: FedAvg is dragged far away, while FedMedian,
FedTrimmedAvg, Krum and Multi-Krum stay within a small fraction of the update size.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord

from common.config import MedfedConfig
from medfed.testing.faults import corrupt
from server.recorder import RoundRecorder
from server.strategies import build_strategy
from tests._fed_helpers import FakeGrid, reply, task_identity, train_content

__all__ = ["task_identity"]

NODES = [21, 22, 23, 24, 25]
SHAPES = {"w": (16, 8), "b": (8,)}
GLOBAL = {name: np.zeros(shape, dtype=np.float32) for name, shape in SHAPES.items()}
DIRECTION = {name: np.random.default_rng(9).normal(size=shape) for name, shape in SHAPES.items()}


def _site_update(site: int) -> ArrayRecord:
    rng = np.random.default_rng(site)
    return ArrayRecord(
        {
            name: Array((0.1 * DIRECTION[name] + 0.02 * rng.normal(size=shape)).astype(np.float32))
            for name, shape in SHAPES.items()
        }
    )


def _aggregate(name: str, attack: str | None) -> dict[str, np.ndarray]:
    config = MedfedConfig().replace(
        **{
            "federation.num-sites": 5,
            "federation.min-sites": 3,
            "strategy.name": name,
            "validation.enabled": False,
        }
    )
    strategy = build_strategy(config, RoundRecorder(listener=lambda record, arrays: None))
    sent = ArrayRecord({k: Array(v.copy()) for k, v in GLOBAL.items()})
    list(strategy.configure_train(1, sent, ConfigRecord({}), FakeGrid(NODES)))
    replies = []
    for site, node in enumerate(NODES):
        arrays = _site_update(site)
        if attack is not None and site == 2:
            arrays = corrupt(arrays, sent, attack)
        replies.append(reply(train_content(arrays, site, num_examples=100), node))
    aggregated, _ = strategy.aggregate_train(1, replies)
    return {k: v.numpy() for k, v in aggregated.items()}


def _distance(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return float(np.sqrt(sum(np.sum((a[k] - b[k]) ** 2) for k in SHAPES)))


UPDATE_NORM = float(np.sqrt(sum(np.sum((0.1 * d) ** 2) for d in DIRECTION.values())))


@pytest.mark.usefixtures("task_identity")
@pytest.mark.parametrize("attack", ["scale", "flip"])
@pytest.mark.parametrize("name", ["fedmedian", "fedtrimmedavg", "krum", "multikrum"])
def test_robust_strategy_stays_near_the_clean_aggregate(name: str, attack: str) -> None:
    clean = _aggregate("fedavg", None)
    attacked = _aggregate(name, attack)
    assert _distance(attacked, clean) < 0.25 * UPDATE_NORM


@pytest.mark.usefixtures("task_identity")
def test_plain_fedavg_is_dragged_away_by_one_scaled_update() -> None:
    clean = _aggregate("fedavg", None)
    assert _distance(_aggregate("fedavg", "scale"), clean) > 100 * UPDATE_NORM
    assert _distance(_aggregate("fedavg", "flip"), clean) > 0.3 * UPDATE_NORM
