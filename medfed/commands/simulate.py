"""``medfed simulate``: run a scenario of simulated hospitals, or resume an interrupted run.

``medfed simulate SCENARIO`` runs a scenario file (or a shipped scenario by name, see
``--list``) with a progress bar and writes the usual run directory. ``medfed simulate
--resume RUN_DIR`` continues that run after its last checkpoint, with the settings stored in
the run directory; a SCENARIO or ``--set`` given as well must not change any setting that
shapes the result, or the resume is refused.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.config import MedfedConfig
from common.errors import ConfigError, MedfedError

# rich, the run directory and scenarios (torch), and the runner (Ray, Flower) are imported by
# the functions that use them, not to parse arguments.
if TYPE_CHECKING:
    from rich.console import Console


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``simulate`` subcommand."""
    simulate = commands.add_parser(
        "simulate", help="run a simulated federation from a scenario file, or resume one"
    )
    simulate.add_argument("scenario", nargs="?", help="scenario file or shipped scenario name")
    simulate.add_argument("--resume", metavar="RUN_DIR", help="continue this run directory")
    simulate.add_argument("--rounds", type=int, help="override federation.num-rounds")
    simulate.add_argument("--sites", type=int, help="override federation.num-sites")
    simulate.add_argument("--seed", type=int, help="override run.seed")
    simulate.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any setting, e.g. --set strategy.name=fedmedian (repeatable)",
    )
    simulate.add_argument("--runs-dir", help="where run directories go (default: runs)")
    simulate.add_argument(
        "--data-root", help="folder relative pool paths are resolved in (default ../shared/data)"
    )
    simulate.add_argument("--list", action="store_true", help="list the shipped scenarios")
    simulate.add_argument("--verbose", action="store_true", help="show Flower's and Ray's logs")
    simulate.set_defaults(func=run)


def parse_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--rounds`` / ``--sites`` / ``--set`` / ``--runs-dir`` overrides as flat keys."""
    overrides: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got '{item}'")
        overrides[key.strip()] = value.strip()
    if args.rounds is not None:
        overrides["federation.num-rounds"] = args.rounds
    if args.sites is not None:
        overrides["federation.num-sites"] = args.sites
    if args.seed is not None:
        overrides["run.seed"] = args.seed
    if args.runs_dir:
        overrides["run.runs-dir"] = args.runs_dir
    return overrides


def simulate_config(args: argparse.Namespace) -> MedfedConfig:
    """The typed config for the flags: scenario (or stored run) plus overrides."""
    from server.rundir import RunDirectory
    from simulations.scenario import DEFAULT_DATA_ROOT, load_scenario

    overrides = parse_overrides(args)
    data_root = Path(args.data_root).expanduser().resolve() if args.data_root else DEFAULT_DATA_ROOT
    if args.resume:
        stored = RunDirectory.open_existing(args.resume).stored_config()
        base = dict(stored)
        if args.scenario:
            base.update(load_scenario(args.scenario, data_root).config().to_flat())
        base.update(overrides)
        base.update({"run.resume": True, "run.run-dir": str(Path(args.resume).resolve())})
        return MedfedConfig.from_flat(base)
    if not args.scenario:
        raise ConfigError("give a SCENARIO (see medfed simulate --list) or --resume RUN_DIR")
    return load_scenario(args.scenario, data_root).config(overrides)


def run(args: argparse.Namespace) -> int:
    """Run or resume the simulation; error if not every round completed."""
    from rich.console import Console

    from simulations.scenario import available_scenarios, load_scenario

    if args.list:
        for name in available_scenarios():
            print(f"{name:28s} {load_scenario(name).description}")
        return 0
    config = simulate_config(args)  # checked: a bad setting is refused here, before Ray starts
    console = Console()
    console.print(
        f"medfed simulate: {config.run.name}: {config.federation.num_sites} hospitals, "
        f"{config.federation.num_rounds} rounds, strategy {config.strategy.name}, "
        + (
            f"DP-SGD ε={config.privacy.target_epsilon:g} per site"
            if config.privacy.enabled
            else "DP off"
        )
    )
    run_to_completion(config, console, verbose=args.verbose)
    return 0


def run_to_completion(config: MedfedConfig, console: Console, *, verbose: bool) -> Path:
    """Run the simulated federation; a one-line error unless every round completed."""
    from simulations.runner import run_simulated_federation  # heavy import: Ray, Flower

    started = time.monotonic()
    run_dir = run_simulated_federation(config, console=console, verbose=verbose)
    completed = _completed_rounds(run_dir)
    console.print(f"Finished in {time.monotonic() - started:.0f} s")
    if completed < config.federation.num_rounds:
        raise MedfedError(
            f"only {completed} of {config.federation.num_rounds} rounds completed; rerun with "
            f"--verbose to see why, or continue with: medfed simulate --resume {run_dir}"
        )
    return run_dir


def _completed_rounds(run_dir: Path) -> int:
    from server.rundir import METRICS_FILE

    metrics = run_dir / METRICS_FILE
    return len(metrics.read_text().splitlines()) if metrics.exists() else 0
