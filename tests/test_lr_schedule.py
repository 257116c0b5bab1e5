"""The sites' learning-rate schedule over rounds (``train.lr-schedule``): what a site trains
with in a round, that a bad value is refused naming the key, and that a run whose sites'
rate decays over its planned rounds is not extended."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from common import keys
from common.config import MedfedConfig
from common.errors import ConfigError
from server.checkpoint import extended_rounds
from tests.clientapp_harness import CapturingHarness


def _update(harness: CapturingHarness, server_round: int) -> dict[str, np.ndarray]:
    reply = harness.train(server_round)
    return {name: array.numpy() for name, array in reply.content[keys.ARRAYS].items()}


def test_a_cosine_site_trains_its_last_round_at_the_decayed_rate(
    small_site: Path, small_config: MedfedConfig, tmp_path: Path
) -> None:
    """Round 4 of 4 under cosine uses lr * (1 + cos(3 pi / 4)) / 2: the ClientApp's update is
    bit for bit the update of a constant run at that rate (same seed, same round)."""
    base = small_config.replace(
        **{"privacy.enabled": False, "federation.num-rounds": 4, "train.learning-rate": 0.1}
    )
    cosine = base.replace(**{"train.lr-schedule": "cosine"})
    decayed = 0.1 * (1 + math.cos(math.pi * 3 / 4)) / 2
    assert cosine.train.for_round(4, 4).learning_rate == pytest.approx(decayed)
    assert cosine.train.for_round(1, 4).learning_rate == 0.1
    assert base.train.for_round(4, 4).learning_rate == 0.1

    def site(config: MedfedConfig, name: str) -> CapturingHarness:
        return CapturingHarness(
            small_site,
            config,
            state_dir=tmp_path / name,
            node_extras={keys.NODE_REQUIRE_DP: "false"},  # a site that allows a run without DP
        )

    scheduled = _update(site(cosine, "cosine"), 4)
    at_that_rate = base.replace(
        **{"train.learning-rate": cosine.train.for_round(4, 4).learning_rate}
    )
    constant = _update(site(at_that_rate, "constant"), 4)
    undecayed = _update(site(base, "undecayed"), 4)
    for name in scheduled:
        np.testing.assert_array_equal(scheduled[name], constant[name])
    assert any(not np.array_equal(scheduled[name], undecayed[name]) for name in scheduled)


def test_a_bad_schedule_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"'train.lr-schedule' = 'linear'"):
        MedfedConfig().replace(**{"train.lr-schedule": "linear"})


def test_a_run_whose_sites_rate_decays_is_not_extended() -> None:
    config = MedfedConfig().replace(
        **{"privacy.enabled": False, "train.lr-schedule": "cosine", "federation.num-rounds": 4}
    )
    with pytest.raises(
        ConfigError, match=r"'federation.num-rounds' = 8: train.lr-schedule = 'cosine'"
    ):
        extended_rounds(config.to_flat(), config.replace(**{"federation.num-rounds": 8}))
    constant = config.replace(**{"train.lr-schedule": "constant"})
    assert (
        extended_rounds(constant.to_flat(), constant.replace(**{"federation.num-rounds": 8})) == 4
    )
