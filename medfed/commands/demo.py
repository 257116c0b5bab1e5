"""``medfed demo``: an end-to-end federated DP run on built-in synthetic DICOM hospitals."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from common.config import MedfedConfig
from common.errors import MedfedError
from medfed.commands.simulate import run_to_completion


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand."""
    demo = commands.add_parser("demo", help="federated DP run on synthetic DICOM hospitals")
    demo.add_argument("--sites", type=int, default=3, help="number of hospitals (default 3)")
    demo.add_argument("--rounds", type=int, default=3, help="federated rounds (default 3)")
    demo.add_argument("--epsilon", type=float, default=8.0, help="target ε per site")
    demo.add_argument("--no-dp", action="store_true", help="train without differential privacy")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--images-per-site", type=int, default=320)
    demo.add_argument("--runs-dir", default="runs", help="where run directories go")
    demo.add_argument(
        "--synthetic-root",
        default="~/.cache/medfed/synthetic",
        help="cache folder for the generated hospitals",
    )
    demo.add_argument("--verbose", action="store_true", help="show Flower's and Ray's logs")
    demo.set_defaults(func=run)


def demo_config(args: argparse.Namespace) -> MedfedConfig:
    """The typed config for the demo flags."""
    if args.sites < 1 or args.rounds < 1:
        raise MedfedError("--sites and --rounds must be at least 1")
    overrides = {
        "federation.num-sites": args.sites,
        "federation.num-rounds": args.rounds,
        "federation.min-sites": min(2, args.sites),
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
    config = demo_config(args)
    console = Console()
    console.print(
        f"medfed demo: {args.sites} synthetic hospitals, {args.rounds} rounds, "
        + (f"DP-SGD ε={args.epsilon:g} per site" if not args.no_dp else "DP off")
    )
    run_to_completion(config, console, verbose=args.verbose)
    return 0
