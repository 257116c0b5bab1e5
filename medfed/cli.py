"""The ``medfed`` command: parses flags, builds the typed config, calls the real work.

Each subcommand lives in ``medfed/commands/<name>.py`` and registers itself here. Input
problems end with one line on stderr (``medfed: error: …``) and exit code 2; never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from common.errors import MedfedError
from medfed.commands import certs, demo, privacy, simulate, site

SUBCOMMANDS = (demo, site, simulate, certs, privacy)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every ``medfed`` subcommand."""
    parser = argparse.ArgumentParser(
        prog="medfed", description="Federated learning for hospitals (Flower + Opacus)."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.register(commands)
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
