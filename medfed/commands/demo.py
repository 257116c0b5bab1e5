"""``medfed demo``: an end-to-end federated DP run on built-in synthetic DICOM hospitals."""

from __future__ import annotations

import argparse
from pathlib import Path

from common.config import MedfedConfig  # light: its defaults are the flags' defaults

# rich and the simulation (Ray, Flower, torch) are imported by ``run``, not to parse arguments.


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand; its defaults are ``MedfedConfig``'s."""
    defaults = MedfedConfig()
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
        "federation.min-sites": min(MedfedConfig().federation.min_sites, max(args.sites, 1)),
        "run.runs-dir": args.runs_dir,
        "run.name": "demo",
        "run.seed": args.seed,
        "privacy.enabled": not args.no_dp,
        "privacy.target-epsilon": args.epsilon,
        "data.synthetic-images-per-site": args.images_per_site,
        "data.synthetic-root": str(Path(args.synthetic_root).expanduser()),
    }
    return MedfedConfig().replace(**overrides)


def run(args: argparse.Namespace) -> int:
    """Run the demo federation; error if not every round completed."""
    from rich.console import Console

    from medfed.commands.simulate import run_to_completion

    config = demo_config(args)
    console = Console()
    console.print(
        f"medfed demo: {args.sites} synthetic hospitals, {args.rounds} rounds, "
        + (f"DP-SGD ε={args.epsilon:g} per site" if not args.no_dp else "DP off")
    )
    run_to_completion(config, console, verbose=args.verbose)
    return 0
