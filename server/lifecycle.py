"""One federation lifecycle, whatever drives the rounds.

``RunLifecycle`` owns what every run does around its rounds: open the run directory (or
reopen it and its newest checkpoint when resuming, refusing other settings), hand the
round engine the starting model, the round settings for the sites and a ``RoundRecorder``,
and after every round write the checkpoint, the metrics line and the model and print the
round's line; at the end write ``report.html`` and the summary table.

A *round engine* only drives rounds: ``server.rounds.StrategyEngine`` runs a Flower
strategy (wrapped in ``GuardedStrategy``), ``server.secagg.SecAggEngine`` Flower's SecAgg+
workflow. Both get the same run key, settings, checkpoints and resume.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from common.config import MedfedConfig, Scalar, parse_class_names
from common.errors import ConfigError
from common.models import build_run_model
from common.numbers import number, ratio
from common.params import model_to_arrays
from common.round_settings import encode_round_settings
from server.attestations import AttestationStore
from server.availability import RunStopped
from server.checkpoint import (
    CHECKPOINT_DIR,
    ROUNDS_KEY,
    Checkpoint,
    check_compatible,
    config_hash,
    extended_rounds,
    load_latest,
    save_checkpoint,
)
from server.console import RoundProgress
from server.iterate_average import IterateAverage
from server.public_eval import public_evaluator
from server.recorder import RoundRecord, RoundRecorder
from server.report import write_run_report
from server.report_data import no_site_test_split, official_points
from server.rundir import RunDirectory

StateSource = Callable[[], dict[str, np.ndarray]]
LOG = logging.getLogger("medfed.server")


@dataclass
class RunSummary:
    """The outcome of a run, as printed at its end."""

    run_dir: Path
    rounds: list[RoundRecord] = field(default_factory=list)
    stopped: str = ""  # why the run ended before its planned rounds ("" = it did not)

    @property
    def final(self) -> RoundRecord | None:
        return self.rounds[-1] if self.rounds else None


class RoundEngine(Protocol):
    """Drives rounds ``lifecycle.start_round + 1 .. num_rounds`` on a grid."""

    title: str  # shown in the report's heading ("" for plain rounds)

    def run(self, grid: Grid, context: Context, lifecycle: RunLifecycle) -> None: ...


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
    stored = run_dir.stored_config()
    planned = extended_rounds(stored, config)
    check_compatible(stored, config if planned is None else config.replace(**{ROUNDS_KEY: planned}))
    checkpoint = load_latest(run_dir.path)
    # a checkpoint written before an extension carries the round count planned then
    counts = {config.federation.num_rounds, *run_dir.planned_rounds_before()}
    if planned is not None:
        counts.add(planned)
    accepted = {config_hash(config.replace(**{ROUNDS_KEY: count})) for count in counts}
    if checkpoint is not None and checkpoint.config_hash not in accepted:
        raise ConfigError(f"cannot resume: the checkpoint in {run_dir.path} has other settings")
    return run_dir, checkpoint


class RunLifecycle:
    """One run's directory, checkpoints, console and report around any round engine."""

    def __init__(self, config: MedfedConfig, console: Console | None = None) -> None:
        self.config = config
        self.console = console or Console()
        resumed = check_resume(config)
        self.extended_from: int | None = None  # the planned rounds a resume extends
        if resumed is None:
            self.run_dir, self.checkpoint = RunDirectory.create(config), None
        else:
            self.run_dir, self.checkpoint = resumed
            self.extended_from = self.run_dir.record_resume(config)  # checked above
            self.run_dir.rewrite_metrics(self.checkpoint.metrics if self.checkpoint else [])
        self.summary = RunSummary(self.run_dir.path)
        self.history: list[dict[str, object]] = []
        attestations = AttestationStore(self.run_dir.path)
        # the served model: the global model or its moving average (strategy.ema-decay)
        self.average = IterateAverage(config.strategy.ema_decay)
        if self.checkpoint is not None:
            self.average.restore(self.checkpoint.strategy_state, self.checkpoint.round)
        self.recorder = RoundRecorder(
            listener=self._on_round,
            on_trained=attestations.keep,
            evaluation=config.eval,
            class_names=parse_class_names(config.data.class_names),
            public_eval=public_evaluator(config),
            average=self.average,
        )
        self.strategy_state: StateSource = dict
        # node id -> site name, as learned by the round engine (named failures after a resume)
        self.node_sites: dict[int, str] = self.run_dir.read_node_sites()
        self._fingerprint = config_hash(config)
        self._run_key = self.run_dir.run_key()
        self._progress: RoundProgress | None = None
        if self.checkpoint is not None:
            self.history = list(self.checkpoint.metrics)

    # -- what an engine starts from ---------------------------------------------------------
    @property
    def run_key(self) -> str:
        """The run's key in each site's privacy state: unique, stable across a resume."""
        return self._run_key

    @property
    def start_round(self) -> int:
        """Rounds already completed (0 for a new run)."""
        return self.checkpoint.round if self.checkpoint is not None else 0

    def initial_arrays(self) -> ArrayRecord:
        """The global model to start from: the checkpoint's, or a seeded fresh model."""
        if self.checkpoint is not None:
            return self.checkpoint.array_record()
        torch.manual_seed(self.config.run.seed)
        return model_to_arrays(build_run_model(self.config, self.config.data.channels))

    def saved_strategy_state(self) -> dict[str, np.ndarray]:
        """The server optimiser state stored with the checkpoint (empty for a new run)."""
        return dict(self.checkpoint.strategy_state) if self.checkpoint is not None else {}

    def round_settings(self) -> dict[str, Scalar]:
        """What every sampled site receives with its instructions (``common.round_settings``)."""
        return encode_round_settings(self.config, self.run_key)

    # -- the run ----------------------------------------------------------------------------
    def run(self, grid: Grid, context: Context, engine: RoundEngine) -> RunSummary:
        """Let ``engine`` drive the remaining rounds, recording each; then report."""
        num_rounds = self.config.federation.num_rounds
        self.summary.rounds = [RoundRecord.from_json(line) for line in self.history]
        if self.summary.rounds:  # a resumed run's clock goes on from its last round
            self.recorder.start_clock(elapsed_before=self.summary.rounds[-1].elapsed_s)
        if self.config.run.resume and self.start_round < num_rounds:
            extended = (
                f" (extended from {self.extended_from} planned rounds)"
                if self.extended_from is not None
                else ""
            )
            self.console.print(
                f"Resuming {self.run_dir.path.name} after round {self.start_round}/{num_rounds}"
                + extended,
                soft_wrap=True,  # one line in a log, however narrow the terminal
            )
            self.run_dir.append_event(
                self.start_round,
                "resumed",
                f"continued from the round-{self.start_round} checkpoint{extended}",
            )
        with RoundProgress(num_rounds, self.console, completed=self.start_round) as progress:
            self._progress = progress
            if self.start_round < num_rounds:
                try:
                    engine.run(grid, context, self)
                except RunStopped as stop:
                    self.summary.stopped = self._stopped(str(stop))
                    done = (
                        self.summary.rounds[-1].round if self.summary.rounds else self.start_round
                    )
                    self.run_dir.append_event(done, "stopped", str(stop))
            self._progress = None
        if self.summary.stopped:
            LOG.error("%s", self.summary.stopped)
            self.console.print(f"[bold red]{escape(self.summary.stopped)}[/]")
        title = f"medfed run {self.run_dir.path.name}" + (
            f" ({engine.title})" if engine.title else ""
        )
        write_run_report(self.run_dir.path, title=title)  # what `medfed report` re-renders
        print_summary(self.summary, self.config, self.console)
        return self.summary

    def _stopped(self, why: str) -> str:
        """The one line an operator reads when the sites could not go on: too few online,
        or every one failing round after round."""
        done = self.summary.rounds[-1].round if self.summary.rounds else self.start_round
        return (
            f"run stopped before round {done + 1}: {why}. "
            f"{done} of {self.config.federation.num_rounds} rounds done; "
            f"resume when the sites can take part again: run.resume=true "
            f'run.run-dir="{self.run_dir.path}"'
        )

    def _on_round(self, record: RoundRecord, arrays: ArrayRecord) -> None:
        """The recorder's listener: make the finished round durable, then show it."""
        self.history.append(record.to_json())
        save_checkpoint(
            self.run_dir.path,
            Checkpoint(
                round=record.round,
                arrays={name: array.numpy() for name, array in arrays.items()},
                config_hash=self._fingerprint,
                strategy_state={**self.strategy_state(), **self.average.state()},
                metrics=self.history,
            ),
            keep=self.config.run.keep_checkpoints,
        )
        self.run_dir.append_metrics(record.to_json())
        self.run_dir.write_node_sites(self.node_sites)
        served = self.recorder.served(record.round, arrays)
        self.run_dir.save_model(served, self.config, record.round, threshold=record.threshold)
        self.summary.rounds.append(record)
        if self._progress is not None:
            self._progress.on_round(record)


def print_summary(summary: RunSummary, config: MedfedConfig, console: Console) -> None:
    """Final AUC, sensitivity and specificity (at the operating threshold) per site and
    pooled, epsilon per site, and where the run directory is."""
    final = summary.final
    if final is None:
        console.print(f"No round completed. Run directory: {summary.run_dir}")
        return
    if no_site_test_split(final.site_metrics):
        _print_without_site_tests(summary, final, config, console)
        return
    title = f"Final round {final.round}"
    if final.threshold is not None:
        title += f" (threshold {final.threshold:.2f}, {final.threshold_rule} on validation)"
    table = Table(title=title)
    table.add_column("site")
    for heading in ("AUC", "sensitivity", "specificity", "accuracy"):
        table.add_column(heading, justify="right")
    table.add_column(f"ε (δ={number(config.privacy.delta)})", justify="right")
    latest_epsilon = _latest_epsilon(summary)
    for site, auc in final.site_auc.items():
        eps = latest_epsilon.get(site)
        metrics = final.site_metrics.get(site, {})
        table.add_row(
            site,
            ratio(auc),
            ratio(metrics.get("sensitivity")),  # type: ignore[arg-type]
            ratio(metrics.get("specificity")),  # type: ignore[arg-type]
            ratio(final.site_accuracy[site]),
            "off" if eps is None else number(eps),
        )
    eps_max = "off" if final.epsilon_max is None else f"{number(final.epsilon_max)} (max)"
    table.add_row(
        "pooled",
        ratio(final.auc),
        ratio(final.sensitivity),
        ratio(final.specificity),
        ratio(final.accuracy),
        eps_max,
    )
    console.print(table)
    for line in official_summary(summary):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    console.print(f"Run directory: {summary.run_dir}")


def _latest_epsilon(summary: RunSummary) -> dict[str, float]:
    """Each site's ε after its last round (a site sampled out of the last round spent earlier)."""
    latest: dict[str, float] = {}
    for record in summary.rounds:
        latest.update(record.epsilon)
    return latest


def _print_without_site_tests(
    summary: RunSummary, final: RoundRecord, config: MedfedConfig, console: Console
) -> None:
    """The closing lines of a run whose sites hold no test split: what each site spent, the
    official split's figures, where the run directory is."""
    lines = [f"Final round {final.round}: the sites hold no test split of their own"]
    latest_epsilon = _latest_epsilon(summary)
    if latest_epsilon:
        spent = ", ".join(f"{site} {number(eps)}" for site, eps in sorted(latest_epsilon.items()))
        lines.append(f"ε (δ={number(config.privacy.delta)}) per site: {spent}")
    lines += official_summary(summary)
    lines.append(f"Run directory: {summary.run_dir}")
    for line in lines:
        console.print(line, highlight=False, markup=False, soft_wrap=True)


def official_summary(summary: RunSummary) -> list[str]:
    """The official test split's figures (server side): final round and best-val round."""
    points = official_points([record.to_json() for record in summary.rounds])
    if not points or points[0].best_val:  # the final round scored no official split
        return []
    lines = []
    for point in points:
        where = (
            f"round {point.round} (best official val AUC {ratio(point.figures.get('val_auc'))})"  # type: ignore[arg-type]
            if point.best_val
            else f"final round {point.round}"
        )
        lines.append(f"official test, {where}: {official_figures(point.figures)}")
    return lines


def official_figures(official: Mapping[str, object]) -> str:
    """``auc 0.951 bal.acc 0.880 (sens 0.91 spec 0.85 @0.62)``."""

    def get(key: str) -> float | None:
        value = official.get(key)
        return float(value) if isinstance(value, int | float) else None

    text = (
        f"auc {ratio(get('auc'))} bal.acc {ratio(get('balanced_accuracy'))} "
        f"(sens {ratio(get('sensitivity'))} spec {ratio(get('specificity'))}"
    )
    threshold = get("threshold")
    return text + (f" @{threshold:.2f})" if threshold is not None else ", arg-max)")
