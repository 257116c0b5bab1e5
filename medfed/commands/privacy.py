"""``medfed privacy …``: plan a run's privacy spend, verify a site's ledger, show its spend.

- ``plan``: the noise multiplier and the projected epsilon after each round for given run
  settings, computed by the planning code the sites run (``common.planning``).
- ``verify LEDGER --public-key KEY [--attestations COPIES]``: chain, signatures and epsilon
  of a site's signed privacy ledger (``common.ledger``), and optionally every copy the
  coordinator kept of it. Exit 0 = valid, 1 = invalid (the broken records are named),
  2 = the input cannot be used.
- ``show [--state-dir DIR]``: a site's spend per run and in total, read from its ledger.
- ``audit``: an empirical check of the claimed epsilon (``medfed/commands/privacy_audit.py``).

Parsing only: the work is imported lazily by each command (``medfed --help`` stays fast).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medfed.commands.privacy_audit import register_audit


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``medfed privacy`` and its subcommands."""
    privacy = commands.add_parser("privacy", help="plan, verify, show and audit privacy spend")
    sub = privacy.add_subparsers(dest="privacy_command", required=True)
    _register_plan(sub)
    _register_verify(sub)
    _register_show(sub)
    register_audit(sub)  # the empirical audit (medfed/commands/privacy_audit.py)


def _register_plan(sub: argparse._SubParsersAction) -> None:
    plan = sub.add_parser(
        "plan", help="noise multiplier and projected epsilon per round for run settings"
    )
    plan.add_argument("--epsilon", type=float, required=True, help="privacy.target-epsilon")
    plan.add_argument("--delta", type=float, default=1e-5, help="privacy.delta (default 1e-5)")
    plan.add_argument("--rounds", type=int, required=True, help="federation.num-rounds")
    plan.add_argument("--site-size", type=int, required=True, help="training examples at the site")
    plan.add_argument("--batch-size", type=int, help="train.batch-size")
    plan.add_argument("--batches-per-epoch", type=int, help="train.batches-per-epoch")
    steps = plan.add_mutually_exclusive_group()
    steps.add_argument("--local-epochs", type=int, help="train.local-epochs")
    steps.add_argument("--local-steps", type=int, help="train.local-steps")
    plan.add_argument("--accountant", choices=("prv", "rdp"), help="privacy.accountant")
    plan.add_argument(
        "--noise-multiplier",
        type=float,
        help="privacy.noise-multiplier (fixed noise; default: calibrated to --epsilon)",
    )
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    plan.set_defaults(func=run_plan)


def _register_verify(sub: argparse._SubParsersAction) -> None:
    verify = sub.add_parser(
        "verify", help="check a site's privacy ledger: chain, signatures and epsilon"
    )
    verify.add_argument("ledger", type=Path, help="a privacy-ledger.jsonl (or a copy of it)")
    verify.add_argument(
        "--public-key",
        type=Path,
        required=True,
        help="the site's ledger public key (<ledger-key>.pub, PEM)",
    )
    verify.add_argument(
        "--attestations",
        type=Path,
        help="the coordinator's copies of this site's records "
        "(<run-dir>/attestations/<site>.jsonl): finds records removed from the ledger's end",
    )
    verify.set_defaults(func=run_verify)


def _register_show(sub: argparse._SubParsersAction) -> None:
    show = sub.add_parser("show", help="a site's privacy spend per run and in total")
    show.add_argument(
        "--state-dir",
        type=Path,
        default=Path("."),
        help="the site's state directory (node config 'state-dir'; default: here)",
    )
    show.set_defaults(func=run_show)


_PLAN_FLAGS = {
    "batch_size": "train.batch-size",
    "batches_per_epoch": "train.batches-per-epoch",
    "local_epochs": "train.local-epochs",
    "local_steps": "train.local-steps",
    "accountant": "privacy.accountant",
    "noise_multiplier": "privacy.noise-multiplier",
}


def run_plan(args: argparse.Namespace) -> int:
    """Print the plan (0), or fail with one line (2)."""
    from medfed.privacy_views import print_plan, project_plan

    overrides = {
        "privacy.target-epsilon": args.epsilon,
        "privacy.delta": args.delta,
        "federation.num-rounds": args.rounds,
        **{key: getattr(args, flag) for flag, key in _PLAN_FLAGS.items()},
    }
    projection = project_plan({k: v for k, v in overrides.items() if v is not None}, args.site_size)
    print_plan(projection, as_json=args.json)
    return 0


def run_verify(args: argparse.Namespace) -> int:
    """Print the verdict: 0 valid, 1 invalid, 2 unusable input."""
    from medfed.privacy_views import print_verification

    return print_verification(args.ledger, args.public_key, args.attestations)


def run_show(args: argparse.Namespace) -> int:
    """Print a site's spend per run and in total (0), or fail with one line (2)."""
    from medfed.privacy_views import print_spend

    print_spend(args.state_dir)
    return 0
