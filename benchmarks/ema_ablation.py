"""Ablation of the server-side moving average of iterates (``strategy.ema-decay``, issue 19).

The average is post-processing of the global models a run already produced, so one run that
kept every round's checkpoint (``run.keep-checkpoints = 0``, the default) answers it for any
decay: the checkpoints hold the *raw* global model of every round (the sites train from it,
whatever the run served), and ``server.iterate_average.IterateAverage`` folds them exactly as
the server does. Every decay's served models are scored by the product's own evaluator on
the data set's official splits (``server.public_eval``); a run's figure is the official test
score at the round with the best official **val** AUC, and the decay to use is the one with
the best mean val AUC: nothing here looks at test to choose.

A run made with ``strategy.ema-decay = d`` reproduces this script's row for ``d`` exactly
(same raw iterates, same folding), which the script checks against the run's own
``metrics.jsonl`` when the decays match.

Usage:
    PYTHONPATH=. .venv/bin/python benchmarks/ema_ablation.py RUN_DIR [RUN_DIR ...] \\
        --decays 0 0.5 0.8 0.9 0.95 [--horizons 30] --out benchmarks/results/ema_ablation.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

from common.config import MedfedConfig
from server.checkpoint import CHECKPOINT_DIR, read_checkpoint
from server.iterate_average import IterateAverage
from server.public_eval import PublicEvaluator


def run_config(run_dir: Path) -> MedfedConfig:
    """The settings a run was made with (its ``config.json``)."""
    stored = json.loads((run_dir / "config.json").read_text())["config"]
    return MedfedConfig.from_flat(stored)


def served_scores(run_dir: Path, decays: list[float]) -> dict[float, list[dict[str, object]]]:
    """Per decay, the official figures of the served model after every round."""
    config = run_config(run_dir)
    evaluator = PublicEvaluator(config)
    paths = sorted((run_dir / CHECKPOINT_DIR).glob("round-*.npz"))
    rounds = [read_checkpoint(path) for path in paths]
    numbers = [c.round for c in rounds]
    if numbers != list(range(1, len(numbers) + 1)):
        raise SystemExit(f"{run_dir}: needs every round's checkpoint (run.keep-checkpoints = 0)")
    scores: dict[float, list[dict[str, object]]] = {}
    for decay in decays:
        average = IterateAverage(decay)
        scores[decay] = [
            {"round": c.round, **evaluator(average.fold(c.round, c.array_record()))} for c in rounds
        ]
    return scores


def best_val(history: list[dict[str, object]]) -> dict[str, object]:
    """The figures at the round with the highest official val AUC (earliest on ties)."""
    return max(history, key=lambda line: (float(line["val_auc"]), -int(line["round"])))  # type: ignore[arg-type]


def check_against_run(run_dir: Path, scores: dict[float, list[dict[str, object]]]) -> str:
    """Compare the decay the run itself served with what the run recorded."""
    decay = run_config(run_dir).strategy.ema_decay
    if decay not in scores:
        return f"run served decay {decay} (not in the ablation): not compared"
    recorded = [
        json.loads(line)["official"]
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        if line.strip()
    ]
    worst = max(
        abs(float(line["auc"]) - float(mine["auc"]))  # type: ignore[arg-type]
        for line, mine in zip(recorded, scores[decay], strict=True)
    )
    return f"run served decay {decay}: largest test-AUC difference to its own record {worst:.1e}"


def mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def summary_rows(
    scores: dict[str, dict[float, list[dict[str, object]]]], decays: list[float], horizon: int
) -> list[dict[str, object]]:
    """Per decay, each run's figures at its best-val round among the first ``horizon``."""
    rows = []
    for decay in decays:
        histories = [by_decay[decay][:horizon] for by_decay in scores.values()]
        picked = [best_val(history) for history in histories]
        rows.append(
            {
                "decay": decay,
                "val_auc": [float(p["val_auc"]) for p in picked],  # type: ignore[arg-type]
                "test_auc": [float(p["auc"]) for p in picked],  # type: ignore[arg-type]
                "balanced_accuracy": [float(p["balanced_accuracy"]) for p in picked],  # type: ignore[arg-type]
                "best_round": [int(p["round"]) for p in picked],  # type: ignore[call-overload]
                "final_test_auc": [float(h[-1]["auc"]) for h in histories],  # type: ignore[arg-type]
            }
        )
    return rows


def print_table(rows: list[dict[str, object]], horizon: int) -> float:
    """The markdown table for one horizon; returns the decay chosen on val."""
    chosen = max(rows, key=lambda row: statistics.mean(row["val_auc"]))["decay"]  # type: ignore[arg-type]
    print(f"\nfirst {horizon} rounds:")
    print(
        "| ema-decay | official val AUC (best round) | test AUC @ best val round | "
        "bal. ACC | best-val rounds | last-round test AUC |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        mark = " (chosen on val)" if row["decay"] == chosen else ""
        print(
            f"| {row['decay']:g}{mark} | {mean_sd(row['val_auc'])} | "  # type: ignore[arg-type]
            f"{mean_sd(row['test_auc'])} | {mean_sd(row['balanced_accuracy'])} | "  # type: ignore[arg-type]
            f"{', '.join(map(str, row['best_round']))} | {mean_sd(row['final_test_auc'])} |"  # type: ignore[call-overload,arg-type]
        )
    return float(chosen)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (one per seed)")
    parser.add_argument("--decays", nargs="+", type=float, default=[0.0, 0.5, 0.8, 0.9, 0.95])
    parser.add_argument(
        "--horizons",
        nargs="+",
        type=int,
        default=[],
        help="also choose among the first N rounds only: what a shorter run of the recipe gives",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    scores: dict[str, dict[float, list[dict[str, object]]]] = {}
    for run_dir in args.runs:
        scores[str(run_dir)] = served_scores(run_dir, args.decays)
        print(f"{run_dir}: {check_against_run(run_dir, scores[str(run_dir)])}", flush=True)
    rounds = min(len(history) for by_decay in scores.values() for history in by_decay.values())
    result: dict[str, object] = {"runs": [str(r) for r in args.runs], "horizons": {}}
    for horizon in sorted({*args.horizons, rounds}):
        rows = summary_rows(scores, args.decays, horizon)
        chosen = print_table(rows, horizon)
        result["horizons"][str(horizon)] = {"rows": rows, "chosen_on_val": chosen}  # type: ignore[index]
        if any(math.isnan(v) for row in rows for v in row["test_auc"]):  # type: ignore[attr-defined]
            raise SystemExit("some scores are undefined (a split with one class?)")
    if args.out is not None:
        args.out.write_text(json.dumps({**result, "scores": scores}, indent=2, default=str))


if __name__ == "__main__":
    main()
