"""The SecAgg+ round engine: Flower's SecAgg+ workflow, isolated on the legacy API.

Why legacy: in flwr 1.42 SecAgg+ exists only as ``SecAggPlusWorkflow`` inside a
``DefaultWorkflow`` with a ``LegacyContext`` and a ``flwr.server.strategy`` strategy. This
module is the only server code that uses that path. ``SecAggEngine`` is a round engine of
``server.lifecycle.RunLifecycle``, so a SecAgg+ run has the same run directory, run key,
checkpoints, resume and report as a plain one. What it cannot honour (another strategy,
per-update validation) is refused by the config before round 1 (``common.config``).

What the server sees with SecAgg+ on: per round, the *sum* of the sites' quantised,
example-weighted parameters (unmasked only as a sum) and therefore their weighted average;
each site's scalar metrics (``num-examples``, train loss, epsilon, …) and its evaluation
metrics stay in the clear. The strategy's ``aggregate_fit`` receives one ``FitRes`` per
site whose parameters are all that same average, never one site's own update.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.common import (
    EvaluateRes,
    FitRes,
    Parameters,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid

from common import keys
from common.config import MedfedConfig, Scalar
from common.params import named_arrays
from server.availability import RunStopped, minimums_at_most
from server.lifecycle import RunLifecycle
from server.recorder import RoundRecorder
from server.strategies import availability_of

FitResults = list[tuple[ClientProxy, FitRes]]
FitInspector = Callable[[int, FitResults], None]


def _as_replies(metrics: list[tuple[int, dict[str, Scalar]]]) -> list[RecordDict]:
    return [RecordDict({keys.METRICS: MetricRecord(dict(m))}) for _, m in metrics]  # type: ignore[arg-type]


class SecAggFedAvg(FedAvg):
    """Legacy FedAvg fed by ``SecAggPlusWorkflow``, reporting rounds to a ``RoundRecorder``.

    The workflow counts its rounds from 1; ``round_offset`` (the rounds a resumed run had
    already completed) turns them into the run's true round numbers, for the sites (their
    seeds) and for the records.
    """

    def __init__(
        self,
        config: MedfedConfig,
        recorder: RoundRecorder,
        initial: ArrayRecord,
        settings: dict[str, Scalar],
        *,
        round_offset: int = 0,
        inspect_fit: FitInspector | None = None,
    ) -> None:
        federation = config.federation
        super().__init__(
            fraction_fit=federation.fraction_train,
            fraction_evaluate=federation.fraction_evaluate,
            min_fit_clients=federation.min_sites,
            min_evaluate_clients=federation.min_sites,
            min_available_clients=max(federation.min_sites, federation.min_available),
            initial_parameters=ndarrays_to_parameters(initial.to_numpy_ndarrays()),
            on_fit_config_fn=self._round_settings,
            on_evaluate_config_fn=self._round_settings,
            fit_metrics_aggregation_fn=self._aggregate_train_metrics,
            evaluate_metrics_aggregation_fn=self._aggregate_evaluate_metrics,
        )
        self._settings = settings
        self._availability = availability_of(config)
        self._evaluate_now = -1  # a round whose training already waited out the deadline
        self._offset = round_offset
        self._recorder = recorder
        self._names = list(initial.keys())
        self._latest = initial
        self._inspect_fit = inspect_fit

    def _round_settings(self, server_round: int) -> dict[str, Scalar]:
        return {**self._settings, keys.SERVER_ROUND: server_round + self._offset}

    def _aggregate_train_metrics(
        self, metrics: list[tuple[int, dict[str, Scalar]]]
    ) -> dict[str, Scalar]:
        return dict(self._recorder.aggregate_train(_as_replies(metrics), keys.NUM_EXAMPLES))

    def _aggregate_evaluate_metrics(
        self, metrics: list[tuple[int, dict[str, Scalar]]]
    ) -> dict[str, Scalar]:
        return dict(self._recorder.aggregate_evaluate(_as_replies(metrics), keys.NUM_EXAMPLES))

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list:
        """Wait (boundedly) for sites, then sample from those online; too few: stop."""
        true_round = server_round + self._offset
        online = self._availability.wait(
            lambda: list(client_manager.all()), what=f"round {true_round} training (SecAgg+)"
        )
        if len(online) < self._availability.wanted:
            self._evaluate_now = true_round
        if len(online) < self._availability.needed:
            raise RunStopped(
                f"{len(online)} site(s) online after waiting "
                f"{self._availability.timeout:g} s (federation.wait-timeout), "
                f"{self._availability.needed} needed (federation.min-sites)"
            )
        with minimums_at_most(self, len(online)):
            return super().configure_fit(server_round, parameters, client_manager)

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list:
        """Wait (boundedly) for sites, then evaluate those online."""
        true_round = server_round + self._offset
        online = self._availability.wait(
            lambda: list(client_manager.all()),
            what=f"round {true_round} evaluation (SecAgg+)",
            patient=self._evaluate_now != true_round,
        )
        instructions = []
        if online:
            with minimums_at_most(self, len(online)):
                instructions = super().configure_evaluate(server_round, parameters, client_manager)
        if not instructions:  # the workflow skips evaluation: the round ends here
            self._recorder.end_round(true_round, self._latest)
        return instructions

    def aggregate_fit(
        self,
        server_round: int,
        results: FitResults,
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Average what the workflow unmasked (each result carries the same aggregate)."""
        if self._inspect_fit is not None:
            self._inspect_fit(server_round + self._offset, results)
        parameters, metrics = super().aggregate_fit(server_round, results, failures)
        if parameters is not None:
            ndarrays = [np.asarray(a, dtype=np.float32) for a in parameters_to_ndarrays(parameters)]
            self._latest = named_arrays(ndarrays, self._names)
        return parameters, metrics

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        """Pool the sites' evaluation, then close the round (run directory, console), also
        when no site gave a result."""
        loss, metrics = super().aggregate_evaluate(server_round, results, failures)
        self._recorder.end_round(server_round + self._offset, self._latest)
        return loss, metrics


@dataclass(frozen=True)
class SecAggEngine:
    """Rounds driven by Flower's ``SecAggPlusWorkflow`` (legacy ``DefaultWorkflow``)."""

    inspect_fit: FitInspector | None = None  # tests: what the strategy receives per round
    title: str = "SecAgg+"

    def run(self, grid: Grid, context: Context, lifecycle: RunLifecycle) -> None:
        """Run the remaining rounds of ``lifecycle``'s run on ``grid``."""
        config = lifecycle.config
        secagg = config.secagg
        initial = lifecycle.initial_arrays()
        if lifecycle.start_round == 0:
            lifecycle.recorder.start_clock()
        strategy = SecAggFedAvg(
            config,
            lifecycle.recorder,
            initial,
            lifecycle.round_settings(),
            round_offset=lifecycle.start_round,
            inspect_fit=self.inspect_fit,
        )
        rounds_left = config.federation.num_rounds - lifecycle.start_round
        legacy = LegacyContext(
            context=context,
            # every phase has a deadline: the evaluation's (and each SecAgg+ stage's below)
            config=ServerConfig(
                num_rounds=rounds_left, round_timeout=config.federation.round_timeout
            ),
            strategy=strategy,
        )
        workflow = DefaultWorkflow(
            fit_workflow=SecAggPlusWorkflow(
                num_shares=float(secagg.num_shares),
                reconstruction_threshold=float(secagg.reconstruction_threshold),
                clipping_range=secagg.clipping_range,
                max_weight=secagg.max_weight,
                timeout=config.federation.round_timeout,
            )
        )
        workflow(DeadlineGrid(grid, config.federation.round_timeout), legacy)


class DeadlineGrid:
    """A grid whose ``send_and_receive`` never waits without a deadline: Flower's legacy
    evaluation step calls it without a timeout (flwr 1.42), so a site that hangs would
    hold the federation; here it gets the round timeout."""

    def __init__(self, grid: Grid, timeout: float) -> None:
        self._grid = grid
        self._timeout = timeout

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """The wrapped grid's, with the round timeout when none is given."""
        return self._grid.send_and_receive(
            messages, timeout=self._timeout if timeout is None else timeout
        )

    def __getattr__(self, name: str) -> object:
        return getattr(self._grid, name)
