"""Run a federation of simulated hospitals on this machine with Flower's simulation engine.

Two kinds of simulated hospitals:
- synthetic DICOM hospitals, generated up front (with a progress bar) into the synthetic
  cache so the simulated ClientApps find them ready;
- a partitioned pool (``partition.pool``): only the labels are read here, to print and save
  the per-site class table (``partition.csv``); each client cuts its own share lazily.
One virtual client gets one CPU and Ray gets ``simulation.max-parallel`` CPUs, so at most
that many sites train at once (each with ``train.threads`` torch threads) however many
hospitals the federation has. ``simulation.dropout`` adds deterministic site failures.
The runner plays every site, so it gives the ClientApp what a hospital would decide itself:
the pool partitions and the tensor cache settings (``data.cache``, ``data.cache-dir``).
"""

from __future__ import annotations

import csv
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from flwr.clientapp.typing import Mod
from flwr.simulation import run_simulation
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from client.app import build_client_app
from common import keys
from common.config import MedfedConfig
from common.data.synthetic import ensure_configured_site
from server.app import build_server_app
from server.lifecycle import check_resume
from server.public_eval import server_split_enabled
from server.rundir import new_run_dir
from simulations.dropout import dropout_mod
from simulations.partition import class_table
from simulations.sites import PartitionedPool, site_splits

PARTITION_FILE = "partition.csv"
TABLE_ROWS_SHOWN = 12

WORKER_NICENESS = "RAY_worker_niceness"  # Ray system setting, read when Ray starts


def prepare_partition(config: MedfedConfig, console: Console, run_dir: Path) -> Path:
    """Partition the pool's labels, print the per-site class table and save it as CSV."""
    labels, splits = site_splits(config)
    header, rows = class_table(splits, labels)
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / PARTITION_FILE
    with open(target, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    spec = config.partition
    table = Table(
        title=f"{len(rows)} hospitals from {Path(spec.pool).name} ({spec.split}, {spec.kind}"
        + (f", alpha {spec.alpha:g}" if spec.kind == "dirichlet" else "")
        + (f", power {spec.power:g}" if spec.kind == "quantity" else "")
        + (", acquisition shift" if spec.shift else "")
        + ")"
    )
    for column in header:
        table.add_column(column, justify="left" if column == "site" else "right")
    shown = rows if len(rows) <= TABLE_ROWS_SHOWN else rows[: TABLE_ROWS_SHOWN - 1]
    for row in shown:
        table.add_row(*(str(value) for value in row))
    if len(shown) < len(rows):
        table.add_row(f"... {len(rows) - len(shown)} more", *([""] * (len(header) - 1)))
    console.print(table)
    console.print(f"Class table saved to {target}")
    return target


def prepare_synthetic_sites(config: MedfedConfig, console: Console) -> list[Path]:
    """Generate (or reuse) the synthetic hospitals the simulated nodes will train on."""
    data = config.data
    num_sites = config.federation.num_sites
    total = num_sites * data.synthetic_images_per_site
    paths = []
    with Progress(
        TextColumn("[bold]synthetic hospitals"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("images", total=total)
        for index in range(num_sites):
            paths.append(
                ensure_configured_site(
                    data, config.run.seed, index, on_image=lambda: progress.advance(task)
                )
            )
            progress.update(task, completed=(index + 1) * data.synthetic_images_per_site)
    return paths


class _OperatorLogFilter(logging.Filter):
    """Keep Flower's warnings and client failures; drop its per-step INFO chatter."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "run_simulation" in message and "deprecated" in message:
            return False
        if "simulated dropout" in message:
            return False  # expected, and named in the round's line
        return record.levelno >= logging.WARNING or "error in reply" in message


def run_simulated_federation(
    config: MedfedConfig,
    *,
    console: Console | None = None,
    verbose: bool = False,
    client_mods: Sequence[Mod] = (),
) -> Path:
    """Run (or resume) the configured simulated federation; return the run directory."""
    console = console or Console()
    if not config.run.run_dir:
        config = config.replace(
            **{"run.run-dir": str(new_run_dir(Path(config.run.runs_dir), config.run.name))}
        )
    if not config.federation.min_available:
        # Simulated nodes register while the ServerApp starts: wait for all of them before
        # sampling round 1, or the first round may see only some (they never go offline).
        config = config.replace(**{"federation.min-available": config.federation.num_sites})
    run_dir = Path(config.run.run_dir).resolve()
    check_resume(config)  # refuse an incompatible resume before starting Ray
    server_split_enabled(config)  # eval.server-split=official without official splits: refuse
    if config.partition.pool:
        prepare_partition(config, console, run_dir)
    else:
        sites = prepare_synthetic_sites(config, console)
        console.print(f"{len(sites)} synthetic hospitals in {sites[0].parent}")
    mods = list(client_mods)
    if config.simulation.dropout > 0:
        mods.append(dropout_mod(config.simulation.dropout, config.run.seed))
    # Ray starts its workers (the simulated hospitals) at nice 15: next to any other busy
    # process on the machine they starve and a round can take many minutes. Run them at
    # the driver's priority, as Ray's own job manager does for its drivers.
    os.environ.setdefault(WORKER_NICENESS, "0")
    flwr_logger = logging.getLogger("flwr")
    log_filter = _OperatorLogFilter()
    if not verbose:
        flwr_logger.addFilter(log_filter)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run_simulation(
                server_app=build_server_app(config, console),
                client_app=build_client_app(
                    mods,
                    partitions=PartitionedPool(),
                    site_defaults={
                        # the runner plays every site: it follows the run's own DP choice
                        keys.NODE_REQUIRE_DP: False,
                        keys.NODE_CACHE: config.data.cache,
                        keys.NODE_CACHE_DIR: config.data.cache_dir,
                        # the simulated sites already share the cores between them
                        keys.NODE_DECODE_WORKERS: config.data.workers or 1,
                    },
                ),
                num_supernodes=config.federation.num_sites,
                backend_config={
                    "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                    "init_args": {
                        "num_cpus": max(1, config.simulation.max_parallel),
                        "logging_level": logging.ERROR,
                        "log_to_driver": verbose,
                    },
                },
                verbose_logging=verbose,
            )
    finally:
        flwr_logger.removeFilter(log_filter)
    return run_dir
