"""A site's privacy policy: the runs a hospital agrees to train, from its node config only.

The coordinator decides a run; the site decides which runs it takes part in. The policy lives
in the SuperNode's node config (``--node-config 'max-epsilon=4 max-rounds=20'``), which the
coordinator cannot reach: the round settings carry none of these keys
(``common.round_settings``), and ``MedfedConfig`` refuses them as unknown.

===========================  =============================================================
``require-dp``               the run must use DP-SGD (default true at a site with a
                             ``data-path``; a simulated node without one defaults to false)
``max-epsilon``              the run's ``privacy.target-epsilon`` may not exceed it
``max-delta``                the run's ``privacy.delta`` may not exceed it
``min-noise-multiplier``     the noise multiplier (explicit, or calibrated from the target
                             epsilon once the site knows its size) may not be below it
``max-rounds``               the run's ``federation.num-rounds`` (and the round asked for)
                             may not exceed it
===========================  =============================================================

A run with DP switched off breaks every epsilon, delta and noise bound the site sets. A
task that breaks the policy is *declined* (``train-status`` = ``STATUS_DECLINED_POLICY``),
decided from the round settings alone, before any of the site's data is read; only the
noise bound of a run whose noise is derived from its target epsilon waits for the plan,
still before training. The reason is logged at the site and never sent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from client.node_values import node_bool, refuse_node_value
from common import keys
from common.config import MedfedConfig

T = TypeVar("T")


def _number(key: str, value: object, allowed: str, ok: Callable[[float], bool]) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise refuse_node_value(key, value, allowed)
    try:
        number = float(value)
    except ValueError:
        raise refuse_node_value(key, value, allowed) from None
    if not math.isfinite(number) or not ok(number):
        raise refuse_node_value(key, value, allowed)
    return number


def _rounds(key: str, value: object) -> int:
    allowed = "a whole number of rounds >= 1"
    number = _number(key, value, allowed, lambda x: x >= 1 and x == int(x))
    return int(number)


def _optional(
    node_config: Mapping[str, object], key: str, parse: Callable[[str, object], T]
) -> T | None:
    value = node_config.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return parse(key, value)


@dataclass(frozen=True)
class SitePolicy:
    """The runs this site agrees to train (``None``: no bound)."""

    require_dp: bool = True
    max_epsilon: float | None = None
    max_delta: float | None = None
    min_noise_multiplier: float | None = None
    max_rounds: int | None = None

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, object]) -> SitePolicy:
        """Read the policy keys; a bad value is a one-line ``ConfigError`` naming the key."""
        require_dp = _optional(node_config, keys.NODE_REQUIRE_DP, node_bool)
        if require_dp is None:  # a real site (its own data folder) requires DP by default
            require_dp = bool(node_config.get(keys.NODE_DATA_PATH))
        return cls(
            require_dp=require_dp,
            max_epsilon=_optional(
                node_config,
                keys.NODE_MAX_EPSILON,
                lambda k, v: _number(k, v, "a number > 0", lambda x: x > 0),
            ),
            max_delta=_optional(
                node_config,
                keys.NODE_MAX_DELTA,
                lambda k, v: _number(k, v, "a number between 0 and 1", lambda x: 0 < x < 1),
            ),
            min_noise_multiplier=_optional(
                node_config,
                keys.NODE_MIN_NOISE_MULTIPLIER,
                lambda k, v: _number(k, v, "a number >= 0", lambda x: x >= 0),
            ),
            max_rounds=_optional(node_config, keys.NODE_MAX_ROUNDS, _rounds),
        )

    def check(
        self,
        config: MedfedConfig,
        *,
        server_round: int = 0,
        noise_multiplier: float | None = None,
    ) -> str | None:
        """Why the site refuses this run (``None``: allowed).

        ``noise_multiplier``: the planned round's noise, once known; before that only an
        explicit ``privacy.noise-multiplier`` is checked against ``min-noise-multiplier``.
        """
        privacy = config.privacy
        rounds = config.federation.num_rounds
        if self.max_rounds is not None and max(rounds, server_round) > self.max_rounds:
            return (
                f"the run asks for {max(rounds, server_round)} rounds and this site allows at "
                f"most {self.max_rounds} (node config {keys.NODE_MAX_ROUNDS})"
            )
        if not privacy.enabled:
            return self._check_no_dp()
        if self.max_epsilon is not None and privacy.target_epsilon > self.max_epsilon:
            return (
                f"the run's target epsilon {privacy.target_epsilon:g} exceeds this site's "
                f"{self.max_epsilon:g} (node config {keys.NODE_MAX_EPSILON})"
            )
        if self.max_delta is not None and privacy.delta > self.max_delta:
            return (
                f"the run's delta {privacy.delta:g} exceeds this site's {self.max_delta:g} "
                f"(node config {keys.NODE_MAX_DELTA})"
            )
        noise = noise_multiplier
        if noise is None and privacy.noise_multiplier > 0:
            noise = privacy.noise_multiplier
        if (
            self.min_noise_multiplier is not None
            and noise is not None
            and noise < self.min_noise_multiplier
        ):
            return (
                f"the run's noise multiplier {noise:.4g} is below this site's "
                f"{self.min_noise_multiplier:g} (node config {keys.NODE_MIN_NOISE_MULTIPLIER})"
            )
        return None

    def _check_no_dp(self) -> str | None:
        bounds = {
            keys.NODE_REQUIRE_DP: self.require_dp,
            keys.NODE_MAX_EPSILON: self.max_epsilon is not None,
            keys.NODE_MAX_DELTA: self.max_delta is not None,
            keys.NODE_MIN_NOISE_MULTIPLIER: self.min_noise_multiplier is not None,
        }
        broken = [key for key, set_ in bounds.items() if set_]
        if not broken:
            return None
        return f"the run has DP switched off and this site requires it (node config {broken[0]})"
