"""ServerApp: the coordinator's side of a federated run.

Builds the typed config (given by the CLI, else from Flower's run-config; a bad value is
refused here, before any site is contacted), opens the run's lifecycle (``server.lifecycle``:
run directory, checkpoints, resume, report) and lets a round engine drive the rounds:
Flower's strategy loop (``server.rounds``) or, with ``secagg.enabled``, Flower's SecAgg+
workflow (``server.secagg``).
"""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from rich.console import Console

from common.config import MedfedConfig
from common.logs import drop_opacus_root_handler
from server.lifecycle import RoundEngine, RunLifecycle, RunSummary
from server.rounds import StrategyEngine
from server.secagg import SecAggEngine


def round_engine(config: MedfedConfig) -> RoundEngine:
    """The engine the config asks for (SecAgg+ settings were checked by the config)."""
    return SecAggEngine() if config.secagg.enabled else StrategyEngine()


def run_federation(
    grid: Grid,
    context: Context,
    config: MedfedConfig,
    console: Console | None = None,
    *,
    engine: RoundEngine | None = None,
) -> RunSummary:
    """Run (or continue) ``config.federation.num_rounds`` rounds on ``grid``; record all."""
    lifecycle = RunLifecycle(config, console)
    return lifecycle.run(grid, context, engine or round_engine(config))


def build_server_app(
    config: MedfedConfig | None = None, console: Console | None = None
) -> ServerApp:
    """A ServerApp running medfed; without ``config`` it reads Flower's run-config."""
    drop_opacus_root_handler()  # or every Flower log line prints twice
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_federation(grid, context, config or MedfedConfig.from_flat(context.run_config), console)

    return app


app = build_server_app()
