"""ServerApp: the coordinator's side of a federated run.

Builds the typed config (given by the CLI, else from Flower's run-config), creates the run
directory, starts Flower's strategy, and after every round appends the metrics line, saves
the global model and prints one line. At the end it writes ``report.html`` and a summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from rich.console import Console
from rich.table import Table

from common.config import MedfedConfig
from common.models import build_model
from common.params import model_to_arrays
from server.console import RoundProgress
from server.recorder import RoundRecord, RoundRecorder
from server.report import write_report
from server.rundir import REPORT_FILE, RunDirectory
from server.strategies import build_strategy


@dataclass
class RunSummary:
    """The outcome of a run, as printed at its end."""

    run_dir: Path
    rounds: list[RoundRecord] = field(default_factory=list)

    @property
    def final(self) -> RoundRecord | None:
        return self.rounds[-1] if self.rounds else None


def run_federation(grid: Grid, config: MedfedConfig, console: Console | None = None) -> RunSummary:
    """Run ``config.federation.num_rounds`` rounds on ``grid`` and record everything."""
    console = console or Console()
    run_dir = RunDirectory.create(config)
    summary = RunSummary(run_dir.path)
    torch.manual_seed(config.run.seed)
    initial = model_to_arrays(build_model(config.model, config.data.channels))
    num_rounds = config.federation.num_rounds

    with RoundProgress(num_rounds, console) as progress:

        def on_round(record: RoundRecord, arrays: ArrayRecord) -> None:
            run_dir.append_metrics(record.to_json())
            run_dir.save_model(arrays, config, record.round)
            summary.rounds.append(record)
            progress.on_round(record)

        recorder = RoundRecorder(listener=on_round)
        strategy = build_strategy(config.federation, recorder)
        settings = ConfigRecord(config.to_flat())
        strategy.start(
            grid=grid,
            initial_arrays=initial,
            num_rounds=num_rounds,
            timeout=config.federation.round_timeout,
            train_config=settings,
            evaluate_config=ConfigRecord(config.to_flat()),
            evaluate_fn=recorder.end_round,
        )

    write_report(
        run_dir.path / REPORT_FILE,
        f"medfed run {run_dir.path.name}",
        config.to_flat(),
        run_dir.read_metrics(),
    )
    print_summary(summary, config, console)
    return summary


def print_summary(summary: RunSummary, config: MedfedConfig, console: Console) -> None:
    """Final AUC per site and pooled, epsilon per site, and where the run directory is."""
    final = summary.final
    if final is None:
        console.print(f"No round completed. Run directory: {summary.run_dir}")
        return
    table = Table(title=f"Final round {final.round}")
    table.add_column("site")
    table.add_column("AUC", justify="right")
    table.add_column("accuracy", justify="right")
    table.add_column(f"ε (δ={config.privacy.delta:g})", justify="right")
    for site, auc in final.site_auc.items():
        eps = final.epsilon.get(site)
        table.add_row(
            site,
            f"{auc:.3f}",
            f"{final.site_accuracy[site]:.3f}",
            "off" if eps is None else f"{eps:.2f}",
        )
    eps_max = "off" if final.epsilon_max is None else f"{final.epsilon_max:.2f} (max)"
    table.add_row("pooled", f"{final.auc:.3f}", f"{final.accuracy:.3f}", eps_max)
    console.print(table)
    console.print(f"Run directory: {summary.run_dir}")


def build_server_app(
    config: MedfedConfig | None = None, console: Console | None = None
) -> ServerApp:
    """A ServerApp running medfed; without ``config`` it reads Flower's run-config."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_config = config or MedfedConfig.from_flat(context.run_config)
        if run_config.secagg.enabled:
            from server.secagg import run_secagg_federation  # legacy API; imports this module

            run_secagg_federation(grid, context, run_config, console)
            return
        run_federation(grid, run_config, console)

    return app


app = build_server_app()
