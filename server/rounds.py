"""The plain round engine: a Flower strategy, wrapped in ``GuardedStrategy``, drives rounds.

``StrategyEngine`` builds the configured strategy (``server.strategies``) around the
lifecycle's recorder, restores its optimiser state from a checkpoint, lets the lifecycle
checkpoint that state after every round, and runs Flower's own ``start`` loop from the
lifecycle's start round with the round settings every site receives.
"""

from __future__ import annotations

from dataclasses import dataclass

from flwr.app import ConfigRecord, Context
from flwr.serverapp import Grid

from server.lifecycle import RunLifecycle
from server.strategies import build_strategy, load_strategy_state, strategy_state


@dataclass(frozen=True)
class StrategyEngine:
    """Rounds driven by Flower's strategy ``start`` loop (every strategy medfed offers)."""

    title: str = ""

    def run(self, grid: Grid, context: Context, lifecycle: RunLifecycle) -> None:
        """Run the remaining rounds of ``lifecycle``'s run on ``grid``."""
        config = lifecycle.config
        strategy = build_strategy(
            config, lifecycle.recorder, lifecycle.node_sites, average=lifecycle.average
        )
        load_strategy_state(strategy.inner, lifecycle.saved_strategy_state())
        lifecycle.strategy_state = lambda: strategy_state(strategy.inner)
        settings = lifecycle.round_settings()
        strategy.start(
            grid=grid,
            initial_arrays=lifecycle.initial_arrays(),
            num_rounds=config.federation.num_rounds,
            timeout=config.federation.round_timeout,
            train_config=ConfigRecord(settings),
            evaluate_config=ConfigRecord(settings),
            evaluate_fn=lifecycle.recorder.end_round,
            start_round=lifecycle.start_round,
        )
