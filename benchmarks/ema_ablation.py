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
        --decays 0 0.5 0.8 0.9 0.95 [--max-round 30] --out benchmarks/results/ema_ablation.json
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


def served_scores(
    run_dir: Path, decays: list[float], max_round: int | None = None
) -> dict[float, list[dict[str, object]]]:
    """Per decay, the official figures of the served model after every round (up to
    ``max_round``: what a shorter run of the same recipe would have served)."""
    config = run_config(run_dir)
    evaluator = PublicEvaluator(config)
    paths = sorted((run_dir / CHECKPOINT_DIR).glob("round-*.npz"))[:max_round]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (one per seed)")
    parser.add_argument("--decays", nargs="+", type=float, default=[0.0, 0.5, 0.8, 0.9, 0.95])
    parser.add_argument(
        "--max-round", type=int, default=None, help="only the first N rounds (a shorter run)"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    per_run: dict[str, dict[str, dict[str, object]]] = {}
    for run_dir in args.runs:
        scores = served_scores(run_dir, args.decays, args.max_round)
        if args.max_round is None:
            print(f"{run_dir}: {check_against_run(run_dir, scores)}", flush=True)
        per_run[str(run_dir)] = {
            str(decay): {"best_val": best_val(history), "final": history[-1]}
            for decay, history in scores.items()
        }
    rows = []
    for decay in args.decays:
        picked = [runs[str(decay)] for runs in per_run.values()]
        rows.append(
            {
                "decay": decay,
                "val_auc": [float(p["best_val"]["val_auc"]) for p in picked],
                "test_auc": [float(p["best_val"]["auc"]) for p in picked],
                "balanced_accuracy": [float(p["best_val"]["balanced_accuracy"]) for p in picked],
                "best_round": [int(p["best_val"]["round"]) for p in picked],
                "final_test_auc": [float(p["final"]["auc"]) for p in picked],
            }
        )
    chosen = max(rows, key=lambda row: statistics.mean(row["val_auc"]))["decay"]
    print(
        "| ema-decay | official val AUC (best round) | test AUC @ best val round | "
        "bal. ACC | best-val rounds | final-round test AUC |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        mark = " (chosen on val)" if row["decay"] == chosen else ""
        print(
            f"| {row['decay']:g}{mark} | {mean_sd(row['val_auc'])} | {mean_sd(row['test_auc'])} | "
            f"{mean_sd(row['balanced_accuracy'])} | {', '.join(map(str, row['best_round']))} | "
            f"{mean_sd(row['final_test_auc'])} |"
        )
    if args.out is not None:
        args.out.write_text(
            json.dumps({"runs": per_run, "rows": rows, "chosen_on_val": chosen}, indent=2)
        )
    if any(math.isnan(v) for row in rows for v in row["test_auc"]):
        raise SystemExit("some scores are undefined (a split with one class?)")


if __name__ == "__main__":
    main()
