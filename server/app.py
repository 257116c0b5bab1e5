"""ServerApp: the coordinator's side of a federated run.

Builds the typed config (given by the CLI, else from Flower's run-config), creates the run
directory, starts Flower's strategy, and after every round writes a checkpoint, appends the
metrics line, saves the global model and prints one line. At the end it writes
``report.html`` and a summary. With ``run.resume`` (and ``run.run-dir``) it continues an
existing run from its last checkpoint, refusing settings that differ from the original.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from rich.console import Console
from rich.table import Table

from common import keys
from common.config import MedfedConfig
from common.errors import ConfigError
from common.models import build_model
from common.params import model_to_arrays
from server.checkpoint import (
    CHECKPOINT_DIR,
    Checkpoint,
    check_compatible,
    config_hash,
    load_latest,
    save_checkpoint,
)
from server.console import RoundProgress
from server.recorder import RoundRecord, RoundRecorder
from server.report import write_report
from server.rundir import REPORT_FILE, RunDirectory
from server.strategies import build_strategy, load_strategy_state, strategy_state


@dataclass
class RunSummary:
    """The outcome of a run, as printed at its end."""

    run_dir: Path
    rounds: list[RoundRecord] = field(default_factory=list)

    @property
    def final(self) -> RoundRecord | None:
        return self.rounds[-1] if self.rounds else None


def check_resume(config: MedfedConfig) -> tuple[RunDirectory, Checkpoint | None] | None:
    """Check (without writing) that ``config`` may start or resume its run directory.

    Returns the existing run directory and its newest checkpoint when resuming, ``None``
    for a new run; raises ``ConfigError`` when the settings differ from the original run.
    """
    run = config.run
    if not run.resume:
        if run.run_dir and any((Path(run.run_dir) / CHECKPOINT_DIR).glob("round-*.npz")):
            raise ConfigError(
                f"{run.run_dir} already holds a run with checkpoints: resume it "
                "(run.resume=true / medfed simulate --resume) or choose another run directory"
            )
        return None
    run_dir = RunDirectory.open_existing(run.run_dir)
    check_compatible(run_dir.stored_config(), config)
    checkpoint = load_latest(run_dir.path)
    if checkpoint is not None and checkpoint.config_hash != config_hash(config):
        raise ConfigError(f"cannot resume: the checkpoint in {run_dir.path} has other settings")
    return run_dir, checkpoint


def open_run(config: MedfedConfig) -> tuple[RunDirectory, Checkpoint | None]:
    """Create the run directory, or reopen it with its last checkpoint when resuming."""
    resumed = check_resume(config)
    if resumed is None:
        return RunDirectory.create(config), None
    run_dir, checkpoint = resumed
    run_dir.rewrite_metrics(checkpoint.metrics if checkpoint else [])
    return run_dir, checkpoint


def run_federation(grid: Grid, config: MedfedConfig, console: Console | None = None) -> RunSummary:
    """Run (or continue) ``config.federation.num_rounds`` rounds on ``grid``; record all."""
    console = console or Console()
    run_dir, checkpoint = open_run(config)
    summary = RunSummary(run_dir.path)
    torch.manual_seed(config.run.seed)
    arrays = model_to_arrays(build_model(config.model, config.data.channels))
    num_rounds = config.federation.num_rounds
    history: list[dict[str, object]] = []
    fingerprint = config_hash(config)
    recorder = RoundRecorder(listener=lambda record, arrays: None)
    strategy = build_strategy(config, recorder)
    start_round = 0
    if checkpoint is not None:
        arrays = checkpoint.array_record()
        load_strategy_state(strategy.inner, checkpoint.strategy_state)
        start_round = checkpoint.round
        history = list(checkpoint.metrics)
        summary.rounds = [RoundRecord.from_json(line) for line in history]
        console.print(f"Resuming {run_dir.path.name} after round {start_round}/{num_rounds}")

    with RoundProgress(num_rounds, console, completed=start_round) as progress:

        def on_round(record: RoundRecord, round_arrays: ArrayRecord) -> None:
            history.append(record.to_json())
            save_checkpoint(
                run_dir.path,
                Checkpoint(
                    round=record.round,
                    arrays={name: array.numpy() for name, array in round_arrays.items()},
                    config_hash=fingerprint,
                    strategy_state=strategy_state(strategy.inner),
                    metrics=history,
                ),
            )
            run_dir.append_metrics(record.to_json())
            run_dir.save_model(round_arrays, config, record.round)
            summary.rounds.append(record)
            progress.on_round(record)

        recorder.listener = on_round
        if start_round < num_rounds:
            strategy.start(
                grid=grid,
                initial_arrays=arrays,
                num_rounds=num_rounds,
                timeout=config.federation.round_timeout,
                train_config=ConfigRecord({**config.to_flat(), keys.RUN_KEY: run_dir.path.name}),
                evaluate_config=ConfigRecord(config.to_flat()),
                evaluate_fn=recorder.end_round,
                start_round=start_round,
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
    latest_epsilon: dict[str, float] = {}
    for record in summary.rounds:  # a site sampled out of the last round spent ε earlier
        latest_epsilon.update(record.epsilon)
    for site, auc in final.site_auc.items():
        eps = latest_epsilon.get(site)
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
