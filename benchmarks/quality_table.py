"""The quality table of issue 19, from the product's own ``medfed simulate`` runs.

For every scenario x seed this runs ``python -m medfed simulate SCENARIO --seed S`` (the
product command, in a subprocess: Flower's simulation engine, the real ServerApp and
ClientApps) into ``RUNS/<scenario>/seed-<S>``, then reads that run's ``metrics.jsonl``. The
figure of a run is the server's score of the global model on the data set's official test
split (``eval.server-split``) at the round with the best official **val** AUC (model
selection on validation only; the operating threshold was chosen on official val as well).
Next to it: the final round's official test AUC, the pooled site figures (the sites' own
held-out images), max epsilon, and wall time. A run directory that already holds every
round is read, not re-run, so the table can be grown seed by seed (``--seeds 1 2``) and
re-written from what is there (``--no-run``; only the ``--seeds`` given are read).

Usage (``make bench-quality`` runs the whole table: 9 scenarios x 3 seeds):
    PYTHONPATH=. .venv/bin/python benchmarks/quality_table.py \\
        --scenarios pneumonia-5-dirichlet-nondp pneumonia-5-dirichlet-dp8 --seeds 0 \\
        --runs-dir runs/quality --out benchmarks/results/quality_table.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATASETS = ("pneumonia", "breast", "retina")
SETTINGS = ("nondp", "dp8", "dp2")
TABLE_SCENARIOS = [f"{d}-5-dirichlet-{s}" for d in DATASETS for s in SETTINGS]


def read_metrics(run_dir: Path) -> list[dict[str, object]]:
    """The run's ``metrics.jsonl`` lines (empty when it has none)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


ROUNDS_KEY = "federation.num-rounds"


def planned_rounds(run_dir: Path) -> int:
    """``federation.num-rounds`` of the run (0 when it never started)."""
    path = run_dir / "config.json"
    if not path.exists():
        return 0
    return int(json.loads(path.read_text())["config"][ROUNDS_KEY])


def summarise_run(lines: list[dict[str, object]]) -> dict[str, object]:
    """One run's figures: official test at the best-val round and at the final round."""
    best_line, best_auc = None, -math.inf
    for line in lines:
        official = line.get("official") or {}
        auc = official.get("val_auc")  # type: ignore[union-attr]
        if isinstance(auc, int | float) and auc > best_auc:
            best_line, best_auc = line, float(auc)
    if best_line is None:
        raise ValueError("no round has official val/test figures (eval.server-split)")
    final = lines[-1]
    best = best_line["official"]
    return {
        "rounds": len(lines),
        "best_round": best_line["round"],
        "val_auc": best["val_auc"],  # type: ignore[index]
        "test_auc": best["auc"],  # type: ignore[index]
        "test_balanced_accuracy": best["balanced_accuracy"],  # type: ignore[index]
        "test_sensitivity": best["sensitivity"],  # type: ignore[index]
        "test_specificity": best["specificity"],  # type: ignore[index]
        "threshold": best["threshold"],  # type: ignore[index]
        "final_test_auc": final["official"]["auc"],  # type: ignore[index]
        "final_pooled_site_auc": final["auc"],
        "epsilon_max": final["epsilon_max"],
        "elapsed_s": final["elapsed_s"],
    }


def command_wall(log_dir: Path, scenario: str, seed: str) -> float | None:
    """The wall time ``medfed simulate`` printed (``Finished in N s``) in the run's log."""
    log = log_dir / f"{scenario}-{seed}.log"
    found = re.findall(r"Finished in (\d+) s", log.read_text()) if log.exists() else []
    return float(found[-1]) if found else None


def run_one(
    scenario: str, seed: int, runs_dir: Path, log_dir: Path, overrides: tuple[str, ...] = ()
) -> float | None:
    """Run ``medfed simulate`` for one scenario and seed unless its run is complete.

    ``overrides`` are ``KEY=VALUE`` settings passed on as ``--set`` (an ablation of one lever:
    give it its own ``--runs-dir``). Returns the wall time of the command (None when the run
    was already complete).
    """
    run_dir = runs_dir / scenario / f"seed-{seed}"
    wanted = [int(o.partition("=")[2]) for o in overrides if o.startswith(f"{ROUNDS_KEY}=")]
    planned = wanted[-1] if wanted else planned_rounds(run_dir)
    if run_dir.exists() and len(read_metrics(run_dir)) >= planned > 0:
        return None
    command = [sys.executable, "-m", "medfed", "simulate", scenario, "--seed", str(seed)]
    if run_dir.exists():  # interrupted (or extended to more rounds): go on from its checkpoint
        command += ["--resume", str(run_dir)]
    else:
        command += ["--set", f"run.run-dir={run_dir}"]
    for override in overrides:  # a resumed lever run keeps its lever
        command += ["--set", override]
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{scenario}-seed-{seed}.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    started = time.monotonic()
    with open(log, "w") as handle:
        code = subprocess.call(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, env=env)
    wall = time.monotonic() - started
    print(f"{scenario} seed {seed}: exit {code}, {wall:.0f} s (log {log})", flush=True)
    if code != 0:
        raise SystemExit(f"medfed simulate failed for {scenario} seed {seed}: see {log}")
    return wall


def mean_sd(values: list[float]) -> str:
    """``0.951 ± 0.004 (n=3)``, or the single value with ``(n=1)``."""
    if not values:
        return "not run"
    if len(values) == 1:
        return f"{values[0]:.3f} (n=1)"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f} (n={len(values)})"


def table(results: dict[str, dict[str, dict[str, object]]]) -> str:
    """Markdown: one row per scenario, mean ± sd over the seeds that ran."""
    rows = [
        "| scenario | official test AUC @ best val round | test bal. ACC @ val threshold"
        " | final-round test AUC | pooled site AUC (final) | max ε | wall s / run |",
        "|---|---|---|---|---|---|---|",
    ]
    for scenario, seeds in results.items():

        def column(key: str, runs: dict[str, dict[str, object]] = seeds) -> list[float]:
            return [float(r[key]) for r in runs.values() if r.get(key) is not None]  # type: ignore[arg-type]

        eps = column("epsilon_max")
        walls = column("wall_s")
        cells = [
            scenario,
            mean_sd(column("test_auc")),
            mean_sd(column("test_balanced_accuracy")),
            mean_sd(column("final_test_auc")),
            mean_sd(column("final_pooled_site_auc")) if column("final_pooled_site_auc") else "-",
            f"{max(eps):.2f}" if eps else "-",
            f"{statistics.mean(walls):.0f}" if walls else "-",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenarios", nargs="+", default=TABLE_SCENARIOS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--runs-dir", type=Path, default=REPO / "runs" / "quality")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/quality_table.json")
    parser.add_argument("--no-run", action="store_true", help="only read the existing runs")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting for every new run (an ablation; use its own --runs-dir)",
    )
    args = parser.parse_args()
    runs_dir = args.runs_dir.resolve()
    started = time.monotonic()
    if not args.no_run:
        for scenario in args.scenarios:
            for seed in args.seeds:
                run_one(scenario, seed, runs_dir, runs_dir / "logs", tuple(args.set))
    results: dict[str, dict[str, dict[str, object]]] = {}
    for scenario in args.scenarios:
        results[scenario] = {}
        for seed in args.seeds:  # only the command's seeds, whatever else shares the runs dir
            seed_dir = runs_dir / scenario / f"seed-{seed}"
            lines = read_metrics(seed_dir)
            if lines and len(lines) >= planned_rounds(seed_dir):
                summary = summarise_run(lines)
                summary["wall_s"] = command_wall(runs_dir / "logs", scenario, seed_dir.name)
                results[scenario][seed_dir.name] = summary
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))
    print(f"wall {time.monotonic() - started:.0f} s; results in {args.out}")


if __name__ == "__main__":
    main()
