"""Sequence model vs. a 2D model on the middle slice, on the ``series`` scenario.

Runs the shipped ``series`` scenario (3 synthetic CT-series hospitals, ``medfed simulate``'s
runner) four times with the same seed and data: ``seq-gru`` on the ordered 10-slice stacks
(``data.frames = "stack"``) and ``small-cnn`` on the middle slice (``"middle"``), each with
DP-SGD (ε=8 per site) and without DP. Prints a Markdown table of the final round's pooled
test AUC. Usage:
    .venv/bin/python benchmarks/series.py [--rounds N] [--synthetic-root DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from rich.console import Console

from simulations.runner import run_simulated_federation
from simulations.scenario import load_scenario

MODELS = {
    "seq-gru on 10-slice stacks": {"model.name": "seq-gru", "data.frames": "stack"},
    "small-cnn on the middle slice": {"model.name": "small-cnn", "data.frames": "middle"},
}


def run(overrides: dict[str, object], runs_dir: Path) -> dict[str, float | None]:
    """Final-round pooled metrics and wall time of one simulated federation."""
    config = load_scenario("series").config({**overrides, "run.runs-dir": str(runs_dir)})
    started = time.monotonic()
    run_dir = run_simulated_federation(config, console=Console(quiet=True))
    elapsed = time.monotonic() - started
    last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    return {"auc": last["auc"], "eps": last.get("epsilon_max"), "s": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=0, help="override federation.num-rounds")
    parser.add_argument("--synthetic-root", default="~/.cache/medfed/synthetic")
    args = parser.parse_args()
    base: dict[str, object] = {"data.synthetic-root": str(Path(args.synthetic_root).expanduser())}
    if args.rounds:
        base["federation.num-rounds"] = args.rounds
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in MODELS.items():
            for dp in (True, False):
                settings = {**base, **model, "privacy.enabled": dp, "privacy.target-epsilon": 8.0}
                rows.append((name, "ε=8/site" if dp else "no DP", run(settings, Path(tmp))))
    print("| model | privacy | pooled test AUC | max ε | wall s |")
    print("|---|---|---|---|---|")
    for name, privacy, r in rows:
        eps = "-" if r["eps"] is None else f"{r['eps']:.2f}"
        print(f"| {name} | {privacy} | {r['auc']:.3f} | {eps} | {r['s']:.0f} |")


if __name__ == "__main__":
    main()
