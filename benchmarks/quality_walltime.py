"""How long ``make bench-quality`` takes on this machine, from a few rounds of each scenario.

The whole table is 27 ``medfed simulate`` runs (9 scenarios x 3 seeds) of 100-240 rounds:
hours, so it is not timed end to end. This runs each table scenario for ``--rounds`` rounds
(seed 0, the product command through ``quality_table.run_one``, into a scratch runs
directory), reads the time each round took from the run's ``metrics.jsonl`` (``elapsed_s``
is cumulative), and extrapolates a full run: the short run's wall time (start-up included)
plus the median round time of rounds 2.. for each remaining planned round. The table gives
each scenario's figures and the sum for the table's seeds, one run after another, as
``make bench-quality`` runs them.

A DP scenario cut to a few rounds calibrates its noise for those rounds (a round costs the
same). Run it on a quiet machine: the figures are only as good as the load is low.

Usage:
    PYTHONPATH=. .venv/bin/python benchmarks/quality_walltime.py --rounds 4 \\
        --out benchmarks/results/quality_walltime.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import tempfile
from pathlib import Path

from quality_table import ROUNDS_KEY, TABLE_SCENARIOS, read_metrics, run_one

from common.errors import ConfigError
from simulations.scenario import load_scenario


def round_seconds(lines: list[dict[str, object]]) -> list[float]:
    """Seconds each round after the first took (``elapsed_s`` is cumulative)."""
    elapsed = [float(line["elapsed_s"]) for line in lines]  # type: ignore[arg-type]
    return [later - earlier for earlier, later in itertools.pairwise(elapsed)]


def estimate(scenario: str, planned: int, rounds: int, runs_dir: Path) -> dict[str, float | int]:
    """One scenario of ``planned`` rounds: run ``rounds`` of them, extrapolate the rest."""
    # a fresh scratch directory: run_one always runs (None only for an already complete run)
    wall = run_one(scenario, 0, runs_dir, runs_dir / "logs", (f"{ROUNDS_KEY}={rounds}",)) or 0.0
    per_round = statistics.median(round_seconds(read_metrics(runs_dir / scenario / "seed-0")))
    return {
        "planned_rounds": planned,
        "measured_rounds": rounds,
        "measured_wall_s": round(wall, 1),
        "s_per_round": round(per_round, 2),
        "estimated_run_s": round(wall + (planned - rounds) * per_round),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="rounds per short run (>= 3)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the table")
    parser.add_argument("--scenarios", nargs="+", default=TABLE_SCENARIOS)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.rounds < 3:
        raise SystemExit("--rounds must be at least 3 (round 1 carries the start-up)")
    try:  # every scenario checked before the first run starts
        planned = {n: load_scenario(n).config().federation.num_rounds for n in args.scenarios}
    except ConfigError as problem:
        raise SystemExit(f"quality_walltime: {problem}") from None
    scratch = Path(tempfile.mkdtemp(prefix="medfed-walltime-"))
    try:
        figures = {n: estimate(n, planned[n], args.rounds, scratch) for n in args.scenarios}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    total = args.seeds * sum(float(f["estimated_run_s"]) for f in figures.values())
    print("| scenario | planned rounds | s / round | short run wall s | estimated run s |")
    print("|---|---|---|---|---|")
    for name, f in figures.items():
        print(
            f"| {name} | {f['planned_rounds']} | {f['s_per_round']:.2f} | "
            f"{f['measured_wall_s']:.0f} | {f['estimated_run_s']:,} |"
        )
    hours = total / 3600
    print(f"whole table, {args.seeds} seeds one run after another: {total:,.0f} s = {hours:.1f} h")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"scenarios": figures, "table_s": total}, indent=1) + "\n")


if __name__ == "__main__":
    main()
