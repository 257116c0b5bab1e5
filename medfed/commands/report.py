"""``medfed report RUN_DIR``: re-render a run directory's ``report.html`` from its files.

Reads ``config.json`` and ``metrics.jsonl`` (see ``server.rundir``) and writes the
self-contained HTML page (``server.report``) into the run directory, or to ``--out FILE``.
A directory that is not a run ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``report`` subcommand."""
    report = commands.add_parser(
        "report", help="(re)write a run directory's self-contained HTML report"
    )
    report.add_argument("run_dir", metavar="RUN_DIR", help="the run directory")
    report.add_argument("--out", metavar="FILE", help="write here (default: RUN_DIR/report.html)")
    report.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Render the report and say where it is."""
    from common.errors import ConfigError
    from server.report import write_run_report

    try:
        path = write_run_report(args.run_dir, args.out)
    except OSError as problem:  # e.g. --out in a folder that does not exist
        raise ConfigError(
            f"cannot write the report: {problem.strerror}: {problem.filename}"
        ) from None
    print(f"Report written to {path}")
    return 0
