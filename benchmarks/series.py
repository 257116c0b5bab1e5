"""Sequence model vs. a 2D model on the middle slice, on the ``series`` scenario.

Runs the shipped ``series`` scenario (3 synthetic CT-series hospitals, ``medfed simulate``'s
runner) four times with the same seed and data: ``seq-gru`` on the ordered 10-slice stacks
(``data.frames = "stack"``) and ``small-cnn`` on the middle slice (``"middle"``), each with
DP-SGD (ε=8 per site) and without DP. Prints a Markdown table of the final round's pooled
test AUC. ``--centralized`` instead trains both models once, without DP, on one pool of
series drawn from the same generator (210 training, 200 test studies; the setting of
``tests/test_sequence_models.py``). Usage:
    .venv/bin/python benchmarks/series.py [--rounds N] [--synthetic-root DIR] [--centralized]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from torch.utils.data import TensorDataset

from client.evaluate import evaluate_model
from client.train import plan_round, train_locally
from common.config import MedfedConfig
from common.data.synthetic import site_style
from common.data.synthetic_series import synthesize_series
from common.models import build_model
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


def _series_pool(count: int, seed: int, slices: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(count) < 0.4).astype(int)
    volumes = [synthesize_series(rng, slices, 16, bool(y), site_style(0)) for y in labels]
    return torch.from_numpy(np.stack(volumes)).unsqueeze(1), torch.from_numpy(labels)


def centralized(epochs: int = 8) -> None:
    """Non-DP, one pool: test AUC after each epoch, seq-gru on stacks vs the middle slice."""
    torch.set_num_threads(1)
    train_x, train_y = _series_pool(210, seed=0)
    test_x, test_y = _series_pool(200, seed=1)
    middle = train_x.shape[2] // 2
    print(f"| model (centralized, no DP) | test AUC after epochs 1..{epochs} | wall s |")
    print("|---|---|---|")
    for name, frames in (("seq-gru", "stack"), ("small-cnn", "middle")):
        flat = {"model.name": name, "data.frames": frames, "privacy.enabled": False}
        flat |= {"train.batch-size": 16, "train.learning-rate": 0.02}
        config = MedfedConfig.from_flat(flat)
        pick = (lambda x: x) if frames == "stack" else (lambda x: x[:, :, middle])
        dataset = TensorDataset(pick(train_x), train_y)
        torch.manual_seed(0)
        model = build_model(config.model, in_channels=1)
        plan = plan_round(len(dataset), config.train, config.privacy, planned_rounds=epochs)
        started, aucs = time.monotonic(), []
        for _ in range(epochs):
            train_locally(model, dataset, config.train, config.privacy, plan=plan)
            aucs.append(evaluate_model(model, pick(test_x), test_y).auc)
        wall = time.monotonic() - started
        print(f"| {name} ({frames}) | {' '.join(f'{a:.3f}' for a in aucs)} | {wall:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=0, help="override federation.num-rounds")
    parser.add_argument("--synthetic-root", default="~/.cache/medfed/synthetic")
    parser.add_argument("--centralized", action="store_true", help="the non-DP pool comparison")
    args = parser.parse_args()
    if args.centralized:
        centralized()
        return
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
