"""``medfed privacy``: what a site's DP training spent and whether it holds.

Only ``audit`` here (``medfed/commands/privacy_audit.py``); the ledger's ``plan``,
``verify`` and ``show`` join this group.
"""

from __future__ import annotations

import argparse

from medfed.commands.privacy_audit import register_audit


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``privacy`` subcommand group."""
    privacy = commands.add_parser("privacy", help="privacy spend and empirical audit")
    privacy_commands = privacy.add_subparsers(dest="privacy_command", required=True)
    register_audit(privacy_commands)
