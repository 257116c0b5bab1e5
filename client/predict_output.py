"""``medfed predict`` output: CSV (one row per input) or JSON (rows plus the rule applied).

CSV columns: ``file, sop_instance_uid, series_instance_uid, frame, series_files, predicted,
p_<class>`` for every class, ``error`` (empty when scored), and ``explanation`` with
``--explain``. Probabilities are written with 4 decimals. Nothing else from the DICOM header
is written: the UIDs are the only tag values in the output.
"""

from __future__ import annotations

import csv
import json
from typing import IO, Any

from client.predict import PredictionRow, Predictions
from common.model_file import SavedModel

DECIMALS = 4


def columns(result: Predictions, explained: bool) -> list[str]:
    """The CSV header."""
    head = ["file", "sop_instance_uid", "series_instance_uid", "frame", "series_files"]
    probabilities = [f"p_{name}" for name in result.class_names]
    return head + ["predicted", *probabilities, "error"] + (["explanation"] if explained else [])


def write_csv(result: Predictions, handle: IO[str], explained: bool = False) -> None:
    """All rows as CSV."""
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(columns(result, explained))
    width = len(result.class_names)
    for row in result.rows:
        probabilities = [_round(p) for p in row.probabilities] or [""] * width
        line = [
            row.file,
            row.sop_instance_uid,
            row.series_instance_uid,
            "" if row.frame is None else row.frame,
            row.series_files,
            row.predicted,
            *probabilities,
            row.error,
        ]
        writer.writerow(line + ([row.explanation] if explained else []))


def as_json(result: Predictions, saved: SavedModel) -> dict[str, Any]:
    """The rows, the decision rule and the warnings as one JSON-ready object."""
    return {
        "model": {
            "file": str(saved.path),
            "architecture": saved.model,
            "round": saved.round,
            "classes": list(result.class_names),
            "threshold": result.threshold,
            "rule": decision_rule(result),
        },
        "summary": {
            "rows": len(result.rows),
            "scored": result.scored,
            "unreadable": result.unreadable,
            "side_files": result.side_files,
        },
        "warnings": result.warnings,
        "predictions": [_json_row(row, result.class_names) for row in result.rows],
    }


def write_json(result: Predictions, saved: SavedModel, handle: IO[str]) -> None:
    """The JSON document, indented."""
    json.dump(as_json(result, saved), handle, indent=2)
    handle.write("\n")


def decision_rule(result: Predictions) -> str:
    """How a class is picked, in words (``opacity if p(opacity) >= 0.42``)."""
    if result.threshold is None:
        return "arg-max of the class probabilities"
    negative, positive = result.class_names[:2]
    return f"{positive} if p({positive}) >= {result.threshold:g}, else {negative}"


def _json_row(row: PredictionRow, names: tuple[str, ...]) -> dict[str, Any]:
    return {
        "file": row.file,
        "sop_instance_uid": row.sop_instance_uid,
        "series_instance_uid": row.series_instance_uid,
        "frame": row.frame,
        "series_files": row.series_files,
        "predicted": row.predicted or None,
        "probabilities": (
            {name: _round(p) for name, p in zip(names, row.probabilities, strict=True)}
            if row.probabilities
            else None
        ),
        "error": row.error or None,
        **({"explanation": row.explanation} if row.explanation else {}),
    }


def _round(value: float) -> float:
    return round(float(value), DECIMALS)
