"""``medfed site review FAB_OR_HASH``: what a Flower app contains, before a site approves it.

Reads the FAB (a ``.fab`` file, or a hash or unique prefix of one the site kept in
``<state-dir>/apps/``) as a zip, never importing or running any of it, and shows its hash,
name, components, every file with its SHA-256 (checked against the FAB's manifest), the
run-config defaults, and its Python files compared with the medfed release installed here.
Exit code 0 = reviewed (read the report), 2 = the FAB cannot be found or read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from client.approvals import SEEN_APPS_DIR  # light: standard library only

# rich and the review itself are imported by the functions that use them, not to parse
# arguments.
if TYPE_CHECKING:
    from rich.console import Console

    from client.review import AppReview

_DIFF_STYLES = {"+": "green", "-": "red", "@": "cyan"}


def register(site_commands: argparse._SubParsersAction) -> None:
    """Add ``medfed site review`` to the ``site`` subcommands."""
    review = site_commands.add_parser(
        "review", help="show what a Flower app (FAB) contains before approving its hash"
    )
    review.add_argument("fab", help="a .fab file, or a FAB hash (or unique prefix, 8+ hex digits)")
    review.add_argument(
        "--state-dir",
        type=Path,
        help=f"the site's state directory: look the hash up in its {SEEN_APPS_DIR}/ folder",
    )
    review.add_argument("--json", action="store_true", help="print the review as JSON")
    review.set_defaults(func=review_app)


def review_app(args: argparse.Namespace) -> int:
    """Review the FAB and print the report (0), or fail with one line (2)."""
    from rich.console import Console

    from client.approvals import installed_release_root
    from client.review import locate_fab, read_fab, review_fab

    path = locate_fab(args.fab, args.state_dir)
    review = review_fab(read_fab(path), installed_release_root())
    if args.json:
        print(json.dumps({"path": str(path), **review.to_json()}, indent=2))
    else:
        print_review(review, path, Console(soft_wrap=True))
    return 0


def print_review(review: AppReview, path: Path, console: Console) -> None:
    """The human-readable review: identity, files, run config, Python diff, verdict."""
    from rich.text import Text

    from client.review import RUN_CONFIG_NOTE

    plain = {"markup": False, "highlight": False}
    console.print(Text("App ", style="bold") + Text(f"{path}"))
    console.print(f"  FAB hash  {review.fab_hash}", **plain)
    console.print(f"  size      {review.size} bytes", **plain)
    console.print(f"  app       {review.publisher}/{review.name} {review.version}", **plain)
    for role, target in sorted(review.components.items()):
        console.print(f"  {role:<9} {target}", **plain)
    if review.dependencies:
        console.print(f"  depends   {', '.join(review.dependencies)}", **plain)

    console.print(Text(f"\nFiles ({len(review.files)}): sha256, bytes, path", style="bold"))
    for item in review.files:
        flag = "" if item.manifest == "ok" else f"  [{item.manifest}]"
        console.print(f"  {item.sha256}  {item.size:>8}  {item.path}{flag}", **plain)
    for problem in review.problems:
        console.print(Text("  warning: ", style="yellow") + Text(problem))

    console.print(Text(f"\nRun config ({len(review.run_config)} keys)", style="bold"))
    console.print(f"  {RUN_CONFIG_NOTE}", **plain)
    for key, value in review.run_config.items():
        default = review.release_run_config.get(key, "(not in the installed release)")
        note = "" if default == value else f"   (installed release: {default!r})"
        console.print(f"  {key} = {value!r}{note}", **plain)

    console.print(Text("\nPython files against the installed medfed release", style="bold"))
    console.print(f"  release   {review.release_root}", **plain)
    for item in review.python:
        if item.status == "identical":
            continue
        if item.status == "release-only":
            console.print(f"  only in the installed release: {item.path}", **plain)
            continue
        label = "changed" if item.status == "changed" else "only in the FAB (full content)"
        console.print(Text(f"\n  {label}: ", style="bold yellow") + Text(item.path))
        for line in item.lines:
            prefix = "    " if item.status == "new" else "  "
            style = _DIFF_STYLES.get(line[:1], "") if item.status == "changed" else ""
            console.print(Text(prefix + line, style=style))
        if item.omitted:
            console.print(f"    … {item.omitted} more lines not shown", **plain)
    console.print(Text("\n" + review.summary, style="bold"))

    if review.release_error:
        console.print(Text(review.release_error, style="yellow"))
    elif review.is_installed_release:
        console.print(
            Text("this is exactly the installed medfed release", style="bold green")
            + Text(f" (its FAB hash is {review.release_hash})")
        )
    else:
        console.print(
            Text("this is NOT the installed medfed release", style="bold red")
            + Text(f": the installed release builds {review.release_hash}")
        )
