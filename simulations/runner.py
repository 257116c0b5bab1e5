"""Run a federation of simulated hospitals on this machine with Flower's simulation engine.

The synthetic hospitals are generated up front (with a progress bar) into the synthetic cache,
so the simulated ClientApps find them ready. One virtual client gets one CPU, so on a
2-core machine two sites train at a time, each with one torch thread.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

from flwr.clientapp.typing import Mod
from flwr.simulation import run_simulation
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from client.app import build_client_app
from common.config import MedfedConfig
from common.data.synthetic import ensure_synthetic_site
from server.app import build_server_app
from server.rundir import new_run_dir


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
                ensure_synthetic_site(
                    Path(data.synthetic_root),
                    index,
                    seed=config.run.seed,
                    num_images=data.synthetic_images_per_site,
                    image_size=data.synthetic_image_size,
                    test_fraction=data.test_fraction,
                    on_image=lambda: progress.advance(task),
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
        return record.levelno >= logging.WARNING or "error in reply" in message


def run_simulated_federation(
    config: MedfedConfig,
    *,
    console: Console | None = None,
    verbose: bool = False,
    client_mods: Sequence[Mod] = (),
) -> Path:
    """Run the configured federation on synthetic hospitals; return the run directory."""
    console = console or Console()
    if not config.run.run_dir:
        config = config.replace(
            **{"run.run-dir": str(new_run_dir(Path(config.run.runs_dir), config.run.name))}
        )
    sites = prepare_synthetic_sites(config, console)
    console.print(f"{len(sites)} synthetic hospitals in {sites[0].parent}")
    flwr_logger = logging.getLogger("flwr")
    log_filter = _OperatorLogFilter()
    if not verbose:
        flwr_logger.addFilter(log_filter)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run_simulation(
                server_app=build_server_app(config, console),
                client_app=build_client_app(client_mods),
                num_supernodes=config.federation.num_sites,
                backend_config={
                    "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                    "init_args": {"logging_level": logging.ERROR, "log_to_driver": verbose},
                },
                verbose_logging=verbose,
            )
    finally:
        flwr_logger.removeFilter(log_filter)
    return Path(config.run.run_dir).resolve()
