"""The coordinator's side of secure aggregation (Flower SecAgg+), isolated on the legacy API.

Why legacy: in flwr 1.42 SecAgg+ exists only as ``SecAggPlusWorkflow`` inside a
``DefaultWorkflow`` with a ``LegacyContext`` and a ``flwr.server.strategy`` strategy. This
module is the only server code that uses that path (``server.app`` switches to it when the
run config has ``secagg.enabled = true``); the run directory, per-round records and report
are the same as on the Message-API path.

What the server sees with SecAgg+ on: per round, the *sum* of the sites' quantised,
example-weighted parameters (unmasked only as a sum) and therefore their weighted average;
each site's scalar metrics (``num-examples``, train loss, epsilon, …) and its evaluation
metrics stay in the clear. The strategy's ``aggregate_fit`` receives one ``FitRes`` per
site whose parameters are all that same average, never one site's own update.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, MetricRecord, RecordDict
from flwr.common import (
    EvaluateRes,
    FitRes,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid
from rich.console import Console

from client.secagg import named_arrays
from common import keys
from common.config import MedfedConfig
from common.models import build_model
from common.params import model_to_arrays
from server.app import RunSummary, print_summary
from server.console import RoundProgress
from server.recorder import RoundRecord, RoundRecorder
from server.report import write_report
from server.rundir import REPORT_FILE, RunDirectory

FitResults = list[tuple[ClientProxy, FitRes]]
FitInspector = Callable[[int, FitResults], None]


def _as_replies(metrics: list[tuple[int, dict[str, Scalar]]]) -> list[RecordDict]:
    return [RecordDict({keys.METRICS: MetricRecord(dict(m))}) for _, m in metrics]  # type: ignore[arg-type]


class SecAggFedAvg(FedAvg):
    """Legacy FedAvg fed by ``SecAggPlusWorkflow``, reporting rounds to a ``RoundRecorder``."""

    def __init__(
        self,
        config: MedfedConfig,
        recorder: RoundRecorder,
        initial: ArrayRecord,
        *,
        inspect_fit: FitInspector | None = None,
    ) -> None:
        federation = config.federation
        settings = config.to_flat()
        super().__init__(
            fraction_fit=federation.fraction_train,
            fraction_evaluate=federation.fraction_evaluate,
            min_fit_clients=federation.min_sites,
            min_evaluate_clients=federation.min_sites,
            min_available_clients=federation.min_sites,
            initial_parameters=ndarrays_to_parameters(initial.to_numpy_ndarrays()),
            on_fit_config_fn=lambda rnd: {**settings, "server-round": rnd},
            on_evaluate_config_fn=lambda rnd: {**settings, "server-round": rnd},
            fit_metrics_aggregation_fn=self._aggregate_train_metrics,
            evaluate_metrics_aggregation_fn=self._aggregate_evaluate_metrics,
        )
        self._recorder = recorder
        self._names = list(initial.keys())
        self._latest = initial
        self._inspect_fit = inspect_fit

    def _aggregate_train_metrics(
        self, metrics: list[tuple[int, dict[str, Scalar]]]
    ) -> dict[str, Scalar]:
        return dict(self._recorder.aggregate_train(_as_replies(metrics), keys.NUM_EXAMPLES))

    def _aggregate_evaluate_metrics(
        self, metrics: list[tuple[int, dict[str, Scalar]]]
    ) -> dict[str, Scalar]:
        return dict(self._recorder.aggregate_evaluate(_as_replies(metrics), keys.NUM_EXAMPLES))

    def aggregate_fit(
        self,
        server_round: int,
        results: FitResults,
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Average what the workflow unmasked (each result carries the same aggregate)."""
        if self._inspect_fit is not None:
            self._inspect_fit(server_round, results)
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
        """Pool the sites' evaluation, then close the round (run directory, console)."""
        loss, metrics = super().aggregate_evaluate(server_round, results, failures)
        if results:
            self._recorder.end_round(server_round, self._latest)
        return loss, metrics


def run_secagg_federation(
    grid: Grid,
    context: Context,
    config: MedfedConfig,
    console: Console | None = None,
    *,
    inspect_fit: FitInspector | None = None,
) -> RunSummary:
    """Run ``config.federation.num_rounds`` SecAgg+ rounds on ``grid`` and record them."""
    console = console or Console()
    run_dir = RunDirectory.create(config)
    summary = RunSummary(run_dir.path)
    torch.manual_seed(config.run.seed)
    initial = model_to_arrays(build_model(config.model, config.data.channels))
    secagg = config.secagg
    num_rounds = config.federation.num_rounds

    with RoundProgress(num_rounds, console) as progress:

        def on_round(record: RoundRecord, arrays: ArrayRecord) -> None:
            run_dir.append_metrics(record.to_json())
            run_dir.save_model(arrays, config, record.round)
            summary.rounds.append(record)
            progress.on_round(record)

        recorder = RoundRecorder(listener=on_round)
        recorder.end_round(0, initial)  # starts the round clock, like strategy.start does
        strategy = SecAggFedAvg(config, recorder, initial, inspect_fit=inspect_fit)
        legacy = LegacyContext(
            context=context,
            config=ServerConfig(num_rounds=num_rounds, round_timeout=None),
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
        workflow(grid, legacy)

    write_report(
        run_dir.path / REPORT_FILE,
        f"medfed run {run_dir.path.name} (SecAgg+)",
        config.to_flat(),
        run_dir.read_metrics(),
    )
    print_summary(summary, config, console)
    return summary
