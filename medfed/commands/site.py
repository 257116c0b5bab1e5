"""``medfed site check PATH``: is a hospital's data folder ready (and safe) to train on?

Reads the folder exactly as training will (same decoder, same cache, so a later training run
starts from the cache), then prints a readiness report: usable images per class and split,
modalities, photometric interpretations, sizes, transfer syntaxes, skipped files with
reasons, which identifying DICOM tags are present, and the clinical variables found (name,
type, missing share; ``--clinical-columns`` checks a run's columns against them): names and
counts, never values.
Exit code 0 = ready, 1 = not ready, 2 = the folder or the options cannot be used (with
``--strict``: also the first unusable file, as one line naming the site and the file).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from common.config import MedfedConfig, parse_class_names
from medfed.commands import site_apps, site_review

# rich and ``common.data`` (numpy, torch, pydicom) are imported by ``check_site``, not to
# parse arguments.
if TYPE_CHECKING:
    from rich.console import Console

    from common.data.readiness import SiteReport

DEFAULT_MIN_IMAGES = 20
NOT_READY = 1


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``site`` subcommand group."""
    site = commands.add_parser("site", help="tools for a hospital's data folder")
    site_commands = site.add_subparsers(dest="site_command", required=True)
    check = site_commands.add_parser("check", help="check a site folder before training")
    check.add_argument("path", help="the site's data folder (or a MedMNIST .npz file)")
    check.add_argument("--site-id", help="name to report (default: folder name)")
    check.add_argument(
        "--min-images",
        type=int,
        default=DEFAULT_MIN_IMAGES,
        help=f"usable training images needed to be ready (default {DEFAULT_MIN_IMAGES})",
    )
    check.add_argument("--classes", help="comma-separated class names (default: data.class-names)")
    check.add_argument("--image-size", type=int, help="model input size (default: data.image-size)")
    check.add_argument("--cache-dir", help="tensor cache folder (default: inside the site folder)")
    check.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    check.add_argument(
        "--workers",
        type=int,
        default=0,
        help="decoding processes for a first read (default 0: one per CPU core)",
    )
    check.add_argument(
        "--clinical-columns",
        default="",
        help="a fusion run's data.clinical-columns, checked against the site's columns",
    )
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first unusable file with a one-line error (as data.strict=true does)",
    )
    check.set_defaults(func=check_site)
    site_apps.register(site_commands)
    site_review.register(site_commands)


def check_site(args: argparse.Namespace) -> int:
    """Build and print the readiness report; 0 when ready, 1 when not."""
    from rich.console import Console

    from common.data.ingest import SiteIngest, class_names, ingest_site
    from common.data.medmnist import find_npz
    from common.data.readiness import build_report
    from common.data.sites import has_dicom_layout, load_site

    overrides: dict[str, object] = {
        "data.strict": args.strict,
        "data.cache": not args.no_cache,
        "data.workers": args.workers,
    }
    if args.classes:
        overrides["data.class-names"] = args.classes
        overrides["model.num-classes"] = len(parse_class_names(args.classes))
    if args.image_size:
        overrides["data.image-size"] = args.image_size
    if args.cache_dir:
        overrides["data.cache-dir"] = args.cache_dir
    if args.clinical_columns:
        overrides["data.clinical-columns"] = args.clinical_columns
        overrides["model.name"] = "fusion-cnn"
    config = MedfedConfig().replace(**overrides).data  # type: ignore[arg-type]
    root = Path(args.path).expanduser()
    site_id = args.site_id or (root.stem if root.suffix == ".npz" else root.name)
    classes = class_names(config)
    console = Console(stderr=True)
    npz = None if has_dicom_layout(root) else find_npz(root)
    if npz is not None:
        data = load_site(npz, config, site_id)
        labels = {"train": data.train_y, "val": data.val_y, "test": data.test_y}
        ingest = SiteIngest(site_id, npz, "npz")
        ingest.labels = {split: y.tolist() for split, y in labels.items()}
    else:
        ingest = ingest_site(root, config, site_id, console=console)
    report = build_report(ingest, classes, args.min_images, config.clinical_columns)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        _print_report(report, Console())
    return 0 if report.ready else NOT_READY


def _print_report(report: SiteReport, console: Console) -> None:
    """Print the report; names from the site (folders, files, classes) never go through
    rich markup, so a folder called ``export [/old]`` is printed as it is."""
    from rich.table import Table
    from rich.text import Text

    from common.data.readiness import PHI_NOTE

    plain = {"markup": False, "highlight": False}
    console.print(
        Text("Site ", style="bold")
        + Text(f"'{report.site_id}'", style="bold")
        + Text(f": {report.path} (layout: {report.layout})")
    )
    table = Table("class", "train", "val", "test", title="Usable images")
    for name in report.classes:
        counts = report.counts[name]
        table.add_row(Text(name), *(str(counts[split]) for split in ("train", "val", "test")))
    console.print(table)
    for title, values in (
        ("Modalities", report.modalities),
        ("Photometric", report.photometric),
        ("Sizes (rows x columns)", report.sizes),
        ("Transfer syntaxes", report.transfer_syntaxes),
        ("Samples", report.frames),
    ):
        if values:
            line = f"{title}: " + ", ".join(f"{k} ({v})" for k, v in values.items())
            console.print(line, **plain)
    if report.clinical:
        table = Table(
            "column", "type", "missing", "distinct values", title="Clinical variables (no values)"
        )
        for column in report.clinical:
            distinct = str(column["distinct_values"]) if column["type"] == "categorical" else "-"
            missing = f"{column['missing']} of {column['images']} ({column['missing_share']:.0%})"
            table.add_row(Text(str(column["name"])), str(column["type"]), missing, distinct)
        console.print(table)
    if report.skipped:
        console.print(Text(f"Skipped ({len(report.skipped)})", style="bold") + Text(":"))
        for item in report.skipped:
            console.print(f"  {item['path']}: {item['reason']}", **plain)
    if report.phi_tags or report.burned_in_yes:
        console.print("[bold]PHI in DICOM tags[/bold] (files with the tag; values not shown):")
        for tag, count in report.phi_tags.items():
            console.print(f"  {tag}: {count}", **plain)
        if report.burned_in_yes:
            console.print(f"  BurnedInAnnotation=YES: {report.burned_in_yes}", **plain)
        console.print(Text(f"  {PHI_NOTE}", style="yellow"))
    for warning in report.warnings:
        console.print(Text("warning:", style="yellow") + Text(f" {warning}"))
    if report.ready:
        train = sum(counts["train"] for counts in report.counts.values())
        console.print(Text("READY", style="bold green") + Text(f": {train} usable training images"))
    else:
        console.print(Text("NOT READY", style="bold red") + Text(": " + "; ".join(report.problems)))
