"""The ``medfed`` command: parses flags, builds the typed config, calls the real work.

Input problems end with one line on stderr (``medfed: error: …``) and exit code 2; never a
traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from common.config import MedfedConfig
from common.data.sites import load_site
from common.errors import MedfedError
from server.rundir import METRICS_FILE


def _demo_config(args: argparse.Namespace) -> MedfedConfig:
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


def cmd_demo(args: argparse.Namespace) -> int:
    """End-to-end federated run on built-in synthetic DICOM hospitals."""
    from simulations.runner import run_simulated_federation  # heavy import: Ray, Flower

    if args.sites < 1 or args.rounds < 1:
        raise MedfedError("--sites and --rounds must be at least 1")
    config = _demo_config(args)
    console = Console()
    console.print(
        f"medfed demo: {args.sites} synthetic hospitals, {args.rounds} rounds, "
        + (f"DP-SGD ε={args.epsilon:g} per site" if not args.no_dp else "DP off")
    )
    started = time.monotonic()
    run_dir = run_simulated_federation(config, console=console, verbose=args.verbose)
    completed = _completed_rounds(run_dir)
    console.print(f"Finished in {time.monotonic() - started:.0f} s")
    if completed < args.rounds:
        raise MedfedError(
            f"only {completed} of {args.rounds} rounds completed; rerun with --verbose "
            f"to see why (partial results in {run_dir})"
        )
    return 0


def _completed_rounds(run_dir: Path) -> int:
    metrics = run_dir / METRICS_FILE
    return len(metrics.read_text().splitlines()) if metrics.exists() else 0


def cmd_site_check(args: argparse.Namespace) -> int:
    """Load a site folder the way training will and list every problem found."""
    config = MedfedConfig().replace(**{"data.strict": False})
    root = Path(args.path)
    site_id = args.site_id or root.name
    data = load_site(root, config.data, site_id)
    for skipped in data.skipped:
        print(f"site '{site_id}': {skipped.path}: {skipped.reason}", file=sys.stderr)
    print(
        f"site '{site_id}': {len(data.train_y)} training and {len(data.test_y)} held-out "
        f"images usable, {len(data.skipped)} skipped"
    )
    return 1 if data.skipped else 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every ``medfed`` subcommand."""
    parser = argparse.ArgumentParser(prog="medfed", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

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
    demo.set_defaults(func=cmd_demo)

    site = commands.add_parser("site", help="tools for a hospital's data folder")
    site_commands = site.add_subparsers(dest="site_command", required=True)
    check = site_commands.add_parser("check", help="check a site folder before training")
    check.add_argument("path", help="the site's data folder")
    check.add_argument("--site-id", help="name to report (default: folder name)")
    check.set_defaults(func=cmd_site_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medfed`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except MedfedError as error:
        print(f"medfed: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medfed: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
