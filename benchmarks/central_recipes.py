"""Centralized training recipes on one MedMNIST data set, each kept at its best official-val
epoch: how far the optimiser, training length, augmentation and weight decay move the
non-private upper bound before any federation or DP (issue 19: BreastMNIST's federated rows
are far below MedMNIST's ResNet-18, and its central row was too).

Every recipe trains a registered model (``common.models``) on the pooled official train
split with the product's own augmentation (``client.augment_views.augmented_views``: one
random view per image per step, up to ``shift`` pixels each way, optional left-right flip),
a cosine learning-rate decay over the epochs, batch 32, and scores the official val split
after every epoch; the reported test AUC is the one at the best-val epoch (the test split
chooses nothing). One seed, ``torch.set_num_threads(1)``.

    PYTHONPATH=. .venv/bin/python benchmarks/central_recipes.py --dataset breastmnist \
        --out benchmarks/results/central_recipes_breast.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from medmnist_quality import DATA_DIR, load_medmnist  # benchmarks/ is sys.path[0]
from sklearn.metrics import roc_auc_score
from torch import nn

from client.augment_views import augmented_views
from common.config import ModelConfig
from common.models import build_model


@dataclass(frozen=True)
class Recipe:
    model: str
    optimiser: str  # sgd (momentum 0.9) | adam
    learning_rate: float
    epochs: int
    shift: int  # 0: no augmentation
    flip: bool
    weight_decay: float


RECIPES = [
    Recipe("small-cnn", "sgd", 0.05, 40, 0, False, 0.0),  # ~ medmnist_quality.py's central
    Recipe("small-cnn", "sgd", 0.05, 40, 3, True, 0.0),
    Recipe("cnn-medium", "sgd", 0.05, 40, 3, True, 0.0),
    Recipe("cnn-medium", "sgd", 0.05, 100, 2, True, 0.0),
    Recipe("cnn-medium", "sgd", 0.05, 100, 2, True, 1e-4),
    Recipe("cnn-medium", "adam", 0.001, 100, 2, True, 1e-4),
    # session 13: does MedMNIST's own architecture (ResNet-18 at 28 px; GroupNorm here) lift
    # the bound that cnn-medium sets?
    Recipe("resnet18-gn", "sgd", 0.05, 100, 2, True, 0.0),
    # session 17: the same network and recipe as cnn-medium's best, BatchNorm for GroupNorm
    # (a non-DP lever: DP-SGD cannot train BatchNorm)
    Recipe("cnn-medium-bn", "sgd", 0.05, 100, 2, True, 0.0),
]


def train(recipe: Recipe, splits: dict, seed: int) -> dict[str, float]:
    """Train ``recipe``; official val AUC of the best epoch and test AUC at that epoch."""
    torch.manual_seed(seed)
    images, labels = splits["train"]
    mean, std = images.mean(), images.std()
    classes = int(labels.max()) + 1
    model = build_model(ModelConfig(name=recipe.model, num_classes=classes), images.shape[1])
    parameters = model.parameters()
    if recipe.optimiser == "adam":
        optimiser: torch.optim.Optimizer = torch.optim.Adam(
            parameters, lr=recipe.learning_rate, weight_decay=recipe.weight_decay
        )
    else:
        optimiser = torch.optim.SGD(
            parameters, lr=recipe.learning_rate, momentum=0.9, weight_decay=recipe.weight_decay
        )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, recipe.epochs)

    def scores(split: str) -> torch.Tensor:
        with torch.no_grad():
            return torch.softmax(model((splits[split][0] - mean) / std), 1)

    def auc(split: str, probabilities: torch.Tensor) -> float:
        truth = splits[split][1].numpy()
        if probabilities.shape[1] == 2:
            return float(roc_auc_score(truth, probabilities[:, 1].numpy()))
        return float(roc_auc_score(truth, probabilities.numpy(), multi_class="ovr"))

    best = {"val_auc": -1.0, "test_auc": float("nan"), "epoch": 0}
    for epoch in range(1, recipe.epochs + 1):
        model.train()
        order = torch.randperm(len(labels))
        for start in range(0, len(order), 32):
            batch = order[start : start + 32]
            views = images[batch]
            if recipe.shift or recipe.flip:
                views = augmented_views(views, 1, recipe.shift, recipe.flip)
            loss = nn.functional.cross_entropy(model((views - mean) / std), labels[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        schedule.step()
        model.eval()
        val = auc("val", scores("val"))
        if val > best["val_auc"]:
            best = {"val_auc": val, "test_auc": auc("test", scores("test")), "epoch": epoch}
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="breastmnist")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--models", nargs="+", help="only the recipes of these models")
    parser.add_argument(
        "--recipes", nargs="+", type=int, help="only these recipes (0-based indices in RECIPES)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    splits = load_medmnist(args.data_dir / f"{args.dataset}.npz")
    rows = []
    print(
        "| model | optimiser, lr | epochs | shift / flip | weight decay | val AUC "
        "| test AUC @ val | epoch | s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for index, recipe in enumerate(RECIPES):
        if args.models and recipe.model not in args.models:
            continue
        if args.recipes and index not in args.recipes:
            continue
        started = time.monotonic()
        best = train(recipe, splits, args.seed)
        seconds = time.monotonic() - started
        rows.append({**asdict(recipe), **best, "seconds": seconds})
        print(
            f"| {recipe.model} | {recipe.optimiser} {recipe.learning_rate:g} | {recipe.epochs} "
            f"| {recipe.shift} / {'yes' if recipe.flip else 'no'} | {recipe.weight_decay:g} "
            f"| {best['val_auc']:.3f} | {best['test_auc']:.3f} | {best['epoch']} | {seconds:.0f} |",
            flush=True,
        )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps({"dataset": args.dataset, "seed": args.seed, "rows": rows}, indent=1) + "\n"
        )


if __name__ == "__main__":
    main()
