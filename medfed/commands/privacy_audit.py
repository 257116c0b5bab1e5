"""``medfed privacy audit``: does the claimed epsilon hold against real attacks?

Runs ``simulations.audit`` (a canary membership audit in one training run, without and
with DP, then gradient inversion of a single-image update), prints the table (epsilon
claimed, the empirical lower bound epsilon_lower with its interval, reconstruction SSIM
without and with DP) and writes ``audit.json`` and ``inversion-*.png`` to ``--out``.
Exit code 1 if the DP run's epsilon_lower exceeds the claimed epsilon (the attack refutes
the claim: a DP bug), 2 for bad options.
"""

from __future__ import annotations

import argparse
from pathlib import Path

# torch, Opacus, rich and matplotlib are imported by ``run_audit_command``, not to parse.
DEFAULT_OUT = "privacy-audit"
CLAIM_REFUTED = 1  # exit code when epsilon_lower exceeds the claimed epsilon
DEFAULT_MEDMNIST_ROOT = "../shared/data/medmnist"  # simulations.audit.data's default


def register_audit(privacy_commands: argparse._SubParsersAction) -> None:
    """Add ``medfed privacy audit`` to the ``privacy`` subcommands."""
    audit = privacy_commands.add_parser(
        "audit", help="empirical privacy audit: canary membership test and gradient inversion"
    )
    audit.add_argument("--out", default=DEFAULT_OUT, help="output folder (default %(default)s)")
    audit.add_argument(
        "--epsilon", type=float, default=8.0, help="target ε of the DP run (default %(default)s)"
    )
    audit.add_argument(
        "--delta", type=float, default=1e-5, help="δ of the DP run (default %(default)s)"
    )
    audit.add_argument(
        "--canaries", type=int, help="canaries planted, each kept w.p. 1/2 (default 256; quick 128)"
    )
    audit.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    audit.add_argument(
        "--quick", action="store_true", help="a smaller audit (128 canaries, 60 ordinary images)"
    )
    audit.add_argument(
        "--source",
        choices=("synthetic", "medmnist"),
        default="synthetic",
        help="the site's ordinary images (default %(default)s: generated, no files needed)",
    )
    audit.add_argument(
        "--medmnist-root",
        default=DEFAULT_MEDMNIST_ROOT,
        help="MedMNIST .npz (or a folder with one) for --source medmnist (default %(default)s)",
    )
    audit.set_defaults(func=run_audit_command)


def run_audit_command(args: argparse.Namespace) -> int:
    """Run the audit, print its table, write its files."""
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from simulations.audit.report import TABLE_COLUMNS, table_rows, verdict, write_report
    from simulations.audit.run import AuditConfig, run_audit

    settings: dict[str, object] = {
        "epsilon": args.epsilon,
        "delta": args.delta,
        "seed": args.seed,
        "source": args.source,
        "medmnist_root": args.medmnist_root,
    }
    if args.canaries is not None:
        settings["canaries"] = args.canaries
    config = AuditConfig.quick(**settings) if args.quick else AuditConfig(**settings)  # type: ignore[arg-type]
    out = Path(args.out).expanduser()
    console = Console()
    console.print(
        f"medfed privacy audit: {config.canaries} canaries, {config.ordinary} ordinary images, "
        f"{config.rounds} rounds x {config.epochs_per_round} epochs, target ε={config.epsilon:g}"
    )
    with Progress(console=console, transient=True) as progress:
        tasks: dict[str, object] = {}

        def show(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = progress.add_task(phase, total=total)
            progress.update(tasks[phase], completed=done)  # type: ignore[arg-type]

        report = run_audit(config, show)
    table = Table(title="Empirical privacy audit")
    for column in TABLE_COLUMNS:
        table.add_column(column)
    for row in table_rows(report):
        table.add_row(*row)
    console.print(table)
    console.print(verdict(report))
    written = write_report(report, out)
    console.print(f"wrote {', '.join(str(p) for p in written)}")
    return CLAIM_REFUTED if report.with_dp.claim_refuted else 0
