"""``medfed demo``: an end-to-end federated DP run on built-in synthetic DICOM hospitals.

The demo is the ``demo`` scenario (``simulations/scenarios/demo.toml``): ``MedfedConfig``'s
defaults plus the private-training recipe that lets a DP model learn in a short run (FedAvgM
server momentum, one DP-SGD step per round at the same sample rate at every site, more
rounds; see BENCHMARKS.md). Its settings are the flags' defaults.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common.config import MedfedConfig  # light, as is the scenario reader

DEMO_SCENARIO = "demo"


def demo_defaults() -> MedfedConfig:
    """The demo scenario's config (what ``medfed demo`` runs without flags)."""
    from simulations.scenario import load_scenario

    return load_scenario(DEMO_SCENARIO).config()


# rich and the simulation (Ray, Flower, torch) are imported by ``run``, not to parse arguments.


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand; its defaults are the demo scenario's."""
    defaults = demo_defaults()
    demo = commands.add_parser("demo", help="federated DP run on synthetic DICOM hospitals")
    demo.add_argument(
        "--sites",
        type=int,
        default=defaults.federation.num_sites,
        help="number of hospitals (default %(default)s)",
    )
    demo.add_argument(
        "--rounds",
        type=int,
        default=defaults.federation.num_rounds,
        help="federated rounds (default %(default)s)",
    )
    demo.add_argument(
        "--epsilon",
        type=float,
        default=defaults.privacy.target_epsilon,
        help="target ε per site (default %(default)s)",
    )
    demo.add_argument("--no-dp", action="store_true", help="train without differential privacy")
    demo.add_argument(
        "--seed", type=int, default=defaults.run.seed, help="random seed (default %(default)s)"
    )
    demo.add_argument(
        "--images-per-site",
        type=int,
        default=defaults.data.synthetic_images_per_site,
        help="synthetic images per hospital (default %(default)s)",
    )
    demo.add_argument(
        "--runs-dir",
        default=defaults.run.runs_dir,
        help="where run directories go (default %(default)s)",
    )
    demo.add_argument(
        "--synthetic-root",
        default=defaults.data.synthetic_root,
        help="cache folder for the generated hospitals (default %(default)s)",
    )
    demo.add_argument("--verbose", action="store_true", help="show Flower's and Ray's logs")
    demo.set_defaults(func=run)


def demo_config(args: argparse.Namespace) -> MedfedConfig:
    """The typed config for the demo flags (checked: bad values are refused here)."""
    overrides = {
        "federation.num-sites": args.sites,
        "federation.num-rounds": args.rounds,
        "federation.min-sites": min(demo_defaults().federation.min_sites, max(args.sites, 1)),
        "run.runs-dir": args.runs_dir,
        "run.name": "demo",
        "run.seed": args.seed,
        "privacy.enabled": not args.no_dp,
        "privacy.target-epsilon": args.epsilon,
        "data.synthetic-images-per-site": args.images_per_site,
        "data.synthetic-root": str(Path(args.synthetic_root).expanduser()),
    }
    return demo_defaults().replace(**overrides)


def run(args: argparse.Namespace) -> int:
    """Run the demo federation; error if not every round completed."""
    from rich.console import Console

    from medfed.commands.simulate import run_to_completion

    config = demo_config(args)
    console = Console()
    console.print(
        f"medfed demo: {args.sites} synthetic hospitals, {args.rounds} rounds of "
        f"{config.strategy.name}, "
        + (f"DP-SGD ε={args.epsilon:g} per site" if not args.no_dp else "DP off")
    )
    run_to_completion(config, console, verbose=args.verbose)
    return 0
