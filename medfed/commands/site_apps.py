"""``medfed site approve / revoke / approvals / executor``: which apps may run at this site.

A hospital's SuperNode runs a task only if the app (FAB) it came with is approved in the
site's state directory (``client.approvals``). ``approve HASH`` / ``revoke HASH`` change the
allow-list (atomically, audited), ``approve --installed-release`` approves the app that is
exactly the medfed release installed here, ``approvals`` lists them, and ``executor`` is the
process that enforces it next to a ``flower-supernode --isolation process`` (``client.gate``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from client.approvals import ApprovalStore  # light: standard library only

# rich and the gate (Flower) are imported by the commands that use them, not to parse arguments.


def register(site_commands: argparse._SubParsersAction) -> None:
    """Add the app-approval subcommands to ``medfed site``."""
    approve = site_commands.add_parser("approve", help="allow an app (FAB hash) to run here")
    approve.add_argument("fab_hash", nargs="?", help="the app's FAB hash (SHA-256)")
    approve.add_argument(
        "--installed-release",
        action="store_true",
        help="approve the app that is exactly the medfed release installed at this site",
    )
    approve.add_argument("--note", default="", help="why (kept in the audit log)")
    _state_dir(approve)
    approve.set_defaults(func=approve_app)

    revoke = site_commands.add_parser("revoke", help="stop an app (FAB hash) from running here")
    revoke.add_argument("fab_hash", help="the app's FAB hash (SHA-256)")
    _state_dir(revoke)
    revoke.set_defaults(func=revoke_app)

    listing = site_commands.add_parser("approvals", help="list the apps approved at this site")
    _state_dir(listing)
    listing.set_defaults(func=list_approvals)

    executor = site_commands.add_parser(
        "executor",
        help="run approved apps for a SuperNode started with --isolation process",
    )
    executor.add_argument(
        "--runtime-api-address",
        required=True,
        help="the SuperNode's local Runtime API (its --host:--port, e.g. 127.0.0.1:9094)",
    )
    executor.add_argument(
        "--root-certificates",
        help="CA of the SuperNode's Runtime API when it uses TLS (default: plain loopback)",
    )
    executor.add_argument(
        "--cold",
        action="store_true",
        help="a fresh ClientApp process per task (Flower's default) instead of one warm "
        "process per approved app",
    )
    _state_dir(executor)
    executor.set_defaults(func=run_executor)


def _state_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        required=True,
        type=Path,
        help="the site's state directory (the SuperNode's node-config state-dir)",
    )


def approve_app(args: argparse.Namespace) -> int:
    """Add one hash (or the installed release's) to the site's allow-list."""
    from common.errors import ConfigError

    if bool(args.fab_hash) == bool(args.installed_release):
        raise ConfigError("give either a FAB hash or --installed-release")
    fab_hash = args.fab_hash
    note = args.note
    if args.installed_release:
        from client.approvals import installed_release_root, release_hash

        fab_hash = release_hash()
        note = note or f"installed medfed release at {installed_release_root()}"
    approval = ApprovalStore(args.state_dir.expanduser()).approve(fab_hash, note)
    print(f"approved {approval.fab_hash} at this site ({args.state_dir})")
    return 0


def revoke_app(args: argparse.Namespace) -> int:
    """Remove one hash from the allow-list (exit 1 when it was not approved)."""
    if ApprovalStore(args.state_dir.expanduser()).revoke(args.fab_hash):
        print(f"revoked {args.fab_hash.strip().lower()}: its next task is refused")
        return 0
    print(f"{args.fab_hash} was not approved at this site")
    return 1


def list_approvals(args: argparse.Namespace) -> int:
    """Print the approved apps (hash, when, by whom, note)."""
    from rich.console import Console
    from rich.table import Table

    approvals = ApprovalStore(args.state_dir.expanduser()).approvals()
    if not approvals:
        print("no app is approved at this site: every task will be refused")
        return 0
    table = Table(title=f"Apps approved in {args.state_dir}")
    table.add_column("FAB hash", no_wrap=True)
    for column in ("approved (UTC)", "by", "note"):
        table.add_column(column)
    for approval in approvals.values():
        table.add_row(approval.fab_hash, approval.approved_at, approval.approved_by, approval.note)
    Console().print(table)
    return 0


def run_executor(args: argparse.Namespace) -> int:
    """Run the site's gate until stopped (Ctrl-C / SIGTERM)."""
    import logging

    from client.gate import run_site_executor

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    site_log = logging.getLogger("medfed")  # the gate's decisions; Flower logs on its own
    site_log.addHandler(handler)
    site_log.setLevel(logging.INFO)
    run_site_executor(
        args.runtime_api_address,
        ApprovalStore(args.state_dir.expanduser()),
        insecure=args.root_certificates is None,
        root_certificates_path=args.root_certificates,
        warm=not args.cold,
    )
    return 0
