"""Is the synthetic demo task learnable but not trivial, and does DP visibly cost something?

Trains on the demo's synthetic hospitals (defaults of ``medfed demo``):
1. centralized, non-DP, on the pooled training splits: AUC after 1 and 3 epochs;
2. the demo federation (Flower simulation, FedAvg, 3 rounds) with DP (ε=8 per site) and without.
Prints a Markdown table for BENCHMARKS.md. Usage:
    .venv/bin/python benchmarks/demo_task.py [--synthetic-root DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from torch.utils.data import TensorDataset

from client.evaluate import evaluate_model
from client.train import plan_round, train_locally
from common.config import MedfedConfig
from common.data.sites import load_site
from common.metrics import pool
from common.models import build_model
from simulations.runner import prepare_synthetic_sites, run_simulated_federation


def centralized(config: MedfedConfig, sites: list[Path], epochs: int) -> list[float]:
    """Pooled AUC after each epoch of non-DP training on all sites' training splits."""
    data = [load_site(p, config.data, p.name) for p in sites]
    train = TensorDataset(
        torch.cat([d.train_x for d in data]), torch.cat([d.train_y for d in data])
    )
    plain = config.replace(**{"privacy.enabled": False})
    torch.manual_seed(config.run.seed)
    model = build_model(config.model, config.data.channels)
    aucs = []
    plan = plan_round(len(train), plain.train, plain.privacy, planned_rounds=epochs)
    for _ in range(epochs):
        train_locally(model, train, plain.train, plain.privacy, plan=plan)
        aucs.append(pool([evaluate_model(model, d.test_x, d.test_y) for d in data]).auc)
    return aucs


def federated(config: MedfedConfig, epsilon: float | None, runs_dir: Path) -> dict[str, object]:
    """Final-round pooled metrics of the demo federation (``epsilon=None``: no DP)."""
    overrides: dict[str, object] = {"privacy.enabled": epsilon is not None}
    if epsilon is not None:
        overrides["privacy.target-epsilon"] = epsilon
    cfg = config.replace(**overrides, **{"run.runs-dir": str(runs_dir)})
    started = time.monotonic()
    run_dir = run_simulated_federation(cfg, console=Console(quiet=True))
    elapsed = time.monotonic() - started
    last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    return {"auc": last["auc"], "acc": last["accuracy"], "eps": last["epsilon_max"], "s": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic-root", default="~/.cache/medfed/synthetic")
    args = parser.parse_args()
    config = MedfedConfig().replace(
        **{"data.synthetic-root": str(Path(args.synthetic_root).expanduser())}
    )
    sites = prepare_synthetic_sites(config, Console(quiet=True))
    central = centralized(config, sites, epochs=3)
    with tempfile.TemporaryDirectory() as tmp:
        runs = {
            f"FedAvg 3 rounds, DP ε={eps:g}/site": federated(config, eps, Path(tmp))
            for eps in (8.0, 1.0, 0.3)
        }
        runs["FedAvg 3 rounds, no DP"] = federated(config, None, Path(tmp))
    print("| setting | pooled AUC | pooled ACC | max ε | wall s |")
    print("|---|---|---|---|---|")
    print(f"| centralized non-DP, 1 epoch | {central[0]:.3f} | | | |")
    print(f"| centralized non-DP, 3 epochs | {central[-1]:.3f} | | | |")
    for name, r in runs.items():
        eps = "-" if r["eps"] is None else f"{r['eps']:.2f}"
        print(f"| {name} | {r['auc']:.3f} | {r['acc']:.3f} | {eps} | {r['s']:.0f} |")


if __name__ == "__main__":
    main()
