"""``medfed site …``: tools a hospital's IT staff run on their own data folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.config import MedfedConfig
from common.data.sites import load_site


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``site`` subcommand group."""
    site = commands.add_parser("site", help="tools for a hospital's data folder")
    site_commands = site.add_subparsers(dest="site_command", required=True)
    check = site_commands.add_parser("check", help="check a site folder before training")
    check.add_argument("path", help="the site's data folder")
    check.add_argument("--site-id", help="name to report (default: folder name)")
    check.set_defaults(func=check_site)


def check_site(args: argparse.Namespace) -> int:
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
