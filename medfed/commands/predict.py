"""``medfed predict MODEL_OR_RUN PATH``: score new DICOM images with a trained model.

MODEL_OR_RUN is a ``model.pt`` or the run directory holding it; PATH a DICOM file, a series
folder or any folder of DICOM files. The model's saved preprocessing settings and operating
threshold are used (``--threshold`` overrides the threshold). Output: CSV (default) or JSON,
to stdout or ``--out``; warnings, the progress bar and the summary go to stderr.
``--explain DIR`` writes one Grad-CAM overlay PNG per scored image.
Exit code 0 = done (unreadable files are listed with reasons), 1 = no input could be
scored, 2 = unusable model, path or option (one line).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TextIO

from common.errors import ConfigError

NOTHING_SCORED = 1


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``predict`` subcommand."""
    parser = commands.add_parser(
        "predict", help="score DICOM images with a trained model (CSV or JSON)"
    )
    parser.add_argument("model", metavar="MODEL_OR_RUN", help="a model.pt or a run directory")
    parser.add_argument("path", metavar="PATH", help="a DICOM file, a series or a folder")
    parser.add_argument("--format", choices=("csv", "json"), default="csv", help="default: csv")
    parser.add_argument("--out", metavar="FILE", help="write the output here (default: stdout)")
    parser.add_argument(
        "--explain", metavar="DIR", help="write a Grad-CAM overlay PNG per image into DIR"
    )
    parser.add_argument(
        "--threshold",
        type=float,
        metavar="T",
        help="positive-class probability cut-off (default: the one saved with the model)",
    )
    parser.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    """Score the inputs and write the output; see the module docstring for exit codes."""
    if args.threshold is not None and not (
        math.isfinite(args.threshold) and 0.0 <= args.threshold <= 1.0
    ):
        raise ConfigError(f"--threshold {args.threshold}: must be a probability in [0, 1]")
    from rich.console import Console

    from client.predict import predict
    from client.predict_output import decision_rule, write_csv, write_json
    from common.model_file import load_saved_model

    saved = load_saved_model(args.model)
    target = Path(args.path).expanduser()
    if not target.exists():
        raise ConfigError(f"{target}: no such file or folder to score")
    explain = Path(args.explain).expanduser() if args.explain else None
    handle = _open_output(args.out)
    try:
        result = predict(
            saved,
            target,
            threshold=args.threshold,
            console=Console(stderr=True) if target.is_dir() else None,
            explain_dir=explain,
        )
        for warning in result.warnings:
            print(f"medfed: warning: {warning}", file=sys.stderr)
        if args.format == "json":
            write_json(result, saved, handle)
        else:
            write_csv(result, handle, explained=explain is not None)
    finally:
        if handle is not sys.stdout:
            handle.close()
    print(
        f"medfed: {result.scored} scored, {result.unreadable} unreadable, {result.side_files} "
        f"side files (reasons in the error column); {decision_rule(result)}",
        file=sys.stderr,
    )
    return 0 if result.scored else NOTHING_SCORED


def _open_output(out: str | None) -> TextIO:
    if not out:
        return sys.stdout
    try:
        return open(Path(out).expanduser(), "w", newline="", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write ({exc.strerror})") from None
