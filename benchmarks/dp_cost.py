"""What DP-SGD costs per local epoch: plain SGD vs Opacus hooks vs ghost clipping.

Same model, same data (PneumoniaMNIST training split, 28x28 grayscale), same batch size,
through medfed's own training code (``client.train.prepare_training`` + ``run_steps``): one
warm-up epoch, then the median of ``--repeats`` timed epochs. Prints examples/s and the
ratio of each DP mode's epoch time to plain SGD's, as a Markdown table for BENCHMARKS.md.

Usage:
    PYTHONPATH=. .venv/bin/python benchmarks/dp_cost.py [--models small-cnn cnn-medium]
        [--batch-size 256] [--threads 2] [--repeats 3]
        [--data ../shared/data/medmnist/pneumoniamnist.npz]
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from client.train import plan_round, prepare_training, run_steps
from common.config import MedfedConfig
from common.data.preprocess import normalise
from common.models import build_model

MODES = ("plain", "hooks", "ghost")
DEFAULT_DATA = Path(__file__).resolve().parents[1] / "../shared/data/medmnist/pneumoniamnist.npz"


def prepare(name: str, mode: str, dataset: TensorDataset, batch_size: int) -> Callable[[], None]:
    """A function that runs one local epoch of ``name`` in ``mode`` (plain / hooks / ghost)."""
    config = MedfedConfig().replace(
        **{
            "model.name": name,
            "train.batch-size": batch_size,
            "train.max-physical-batch": 2 * batch_size,  # Poisson batches are not split
            "privacy.enabled": mode != "plain",
            "privacy.noise-multiplier": 1.0,
            "privacy.grad-sample-mode": "hooks" if mode == "plain" else mode,
        }
    )
    plan = plan_round(len(dataset), config.train, config.privacy, planned_rounds=1)
    torch.manual_seed(0)
    model = build_model(config.model, 1)
    prepared = prepare_training(model, dataset, config.train, config.privacy, plan=plan)
    return lambda: run_steps(prepared, plan.steps, config.train.max_physical_batch)  # type: ignore[return-value]


def epoch_seconds(
    name: str, dataset: TensorDataset, batch_size: int, repeats: int
) -> dict[str, float]:
    """Fastest of ``repeats`` epochs per mode, the modes interleaved so that load from other
    processes hits them alike (after one warm-up epoch each)."""
    epochs = {mode: prepare(name, mode, dataset, batch_size) for mode in MODES}
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for attempt in range(repeats + 1):
        for mode, epoch in epochs.items():
            started = time.perf_counter()
            epoch()
            if attempt:
                times[mode].append(time.perf_counter() - started)
    return {mode: min(t) for mode, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["small-cnn", "cnn-medium"])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with np.load(args.data) as arrays:
        images = torch.from_numpy(arrays["train_images"]).float().div(255).unsqueeze(1)
        labels = torch.from_numpy(arrays["train_labels"].reshape(-1).astype(np.int64))
    dataset = TensorDataset(normalise(images), labels)
    print(f"{len(dataset)} images, batch {args.batch_size}, {args.threads} threads")
    print("| model | mode | s / epoch | examples / s | x plain |")
    print("|---|---|---|---|---|")
    for name in args.models:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            seconds = epoch_seconds(name, dataset, args.batch_size, args.repeats)
        for mode in MODES:
            ratio = seconds[mode] / seconds["plain"]
            rate = len(dataset) / seconds[mode]
            print(f"| {name} | {mode} | {seconds[mode]:.2f} | {rate:.0f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
