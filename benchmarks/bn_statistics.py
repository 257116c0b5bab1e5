"""Are a federated BatchNorm model's averaged running statistics what holds it back? (issue 19)

FedAvg averages each site's BatchNorm running means and variances with the weights. Under
non-IID sites that average is not the statistics of the pooled data (it leaves out how far
the sites' means lie apart). This diagnosis scores a run's best-val checkpoint twice with the
product's evaluator on the official splits: with the statistics the federation produced, and
with statistics re-estimated on the pooled official **train** split (every training image in
one place: something the server never has, so this is a diagnosis, not a recipe). If the
second were much better, a server-side correction of the statistics would be worth building.

Usage:
    PYTHONPATH=. .venv/bin/python benchmarks/bn_statistics.py RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from ema_ablation import run_config  # benchmarks/ is sys.path[0]
from flwr.app import Array, ArrayRecord
from quality_table import read_metrics, summarise_run
from torch import nn

from common.config import MedfedConfig
from common.data.medmnist import to_model_tensor
from common.data.preprocess import model_logits
from common.params import model_to_arrays
from server.checkpoint import CHECKPOINT_DIR, read_checkpoint
from server.public_eval import PublicEvaluator


def pooled_train_statistics(model: nn.Module, config: MedfedConfig) -> None:
    """Replace every BatchNorm's running statistics with those of the official train split."""
    with np.load(config.partition.pool, allow_pickle=False) as arrays:
        images = to_model_tensor(
            arrays["train_images"], config.data.image_size, config.data.channels
        )
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise SystemExit(f"model {config.model.name} has no BatchNorm layer")
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a plain average over every batch
    model.train()
    with torch.no_grad():
        for start in range(0, len(images), 256):
            model_logits(model, images[start : start + 256])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        "| run | best-val round | val / test AUC, federated statistics | pooled train statistics |"
    )
    print("|---|---|---|---|")
    for run_dir in args.runs:
        config = run_config(run_dir)
        chosen = int(summarise_run(read_metrics(run_dir))["best_round"])  # type: ignore[call-overload]
        checkpoint = read_checkpoint(run_dir / CHECKPOINT_DIR / f"round-{chosen:04d}.npz")
        arrays = ArrayRecord({k: Array(np.asarray(v)) for k, v in checkpoint.arrays.items()})
        evaluator = PublicEvaluator(config)
        federated = evaluator(arrays)  # also loads the checkpoint into evaluator.model
        pooled_train_statistics(evaluator.model, config)
        pooled = evaluator(model_to_arrays(evaluator.model))
        print(
            f"| {run_dir} | {chosen} | {federated['val_auc']:.3f} / {federated['auc']:.3f} "
            f"| {pooled['val_auc']:.3f} / {pooled['auc']:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
