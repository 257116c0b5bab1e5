"""Does pretraining on a *public* data set help DP-SGD on a small private one? (issue 19 probe)

A lever named by Tramèr & Boneh (2021) and De et al. (2022): learn features on public data
without DP, then fine-tune privately. Here, centrally (the federation left out, to see the
lever's size cheaply): ``scatter-cnn`` trained 8 epochs on PneumoniaMNIST's train split (public
chest X-rays: no privacy cost), its classifier dropped, then trained with Opacus' DP-SGD at
ε = 8, δ = 1e-5 (PRV accountant, Poisson batches of 64 expected, 40 epochs, clip 1.0) on
BreastMNIST's train split, against the same training from a random start. Both learning
rates (0.1, 0.5) and seeds (0, 1) are run; a run's figure is the official test AUC at the
epoch with the best official val AUC. Nothing here is a product setting.

Usage:
    PYTHONPATH=. .venv/bin/python benchmarks/public_pretraining.py \\
        --out benchmarks/results/public_pretraining.json
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import torch
from medmnist_quality import DATA_DIR, Split, load_medmnist  # benchmarks/ is sys.path[0]
from opacus import PrivacyEngine
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from common.config import ModelConfig
from common.data.preprocess import model_logits
from common.models import build_model

EPSILON, DELTA, EPOCHS, BATCH = 8.0, 1e-5, 40, 64


@torch.no_grad()
def auc(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    scores = torch.softmax(model_logits(model, images), dim=1)[:, 1].numpy()
    model.train()
    return float(roc_auc_score(labels.numpy(), scores))


def pretrain(config: ModelConfig, public: dict[str, Split], epochs: int = 8) -> nn.Module:
    """The model trained without DP on the public PneumoniaMNIST train split."""
    torch.manual_seed(0)
    (images, labels), (val_images, val_labels) = public["train"], public["val"]
    model = build_model(config, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for epoch in range(epochs):
        order = torch.randperm(len(images))
        for start in range(0, len(images), BATCH):
            batch = order[start : start + BATCH]
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model_logits(model, images[batch]), labels[batch])
            loss.backward()
            optimizer.step()
        val_auc = auc(model, val_images, val_labels)
        print(f"pretrain epoch {epoch}: PneumoniaMNIST val AUC {val_auc:.3f}", flush=True)
    return model


def private_run(
    config: ModelConfig, private: dict[str, Split], start: nn.Module | None, lr: float, seed: int
) -> dict:
    """DP-SGD on BreastMNIST from ``start``'s features (None: a random start)."""
    torch.manual_seed(seed)
    model = build_model(config, 1)
    if start is not None:
        features = {k: v for k, v in start.state_dict().items() if not k.startswith("classifier")}
        model.load_state_dict(features, strict=False)
    train, val, test = private["train"], private["val"], private["test"]
    engine = PrivacyEngine(accountant="prv")
    model, optimizer, loader = engine.make_private_with_epsilon(
        module=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9),
        data_loader=DataLoader(TensorDataset(*train), batch_size=BATCH),
        target_epsilon=EPSILON,
        target_delta=DELTA,
        epochs=EPOCHS,
        max_grad_norm=1.0,
    )
    best = {"val_auc": -1.0}
    for epoch in range(EPOCHS):
        for images, labels in loader:
            if len(images) == 0:
                continue
            optimizer.zero_grad()
            nn.functional.cross_entropy(model_logits(model, images), labels).backward()
            optimizer.step()
        val_auc = auc(model, *val)
        if val_auc > best["val_auc"]:
            best = {"val_auc": val_auc, "test_auc": auc(model, *test), "epoch": epoch}
    return {
        "start": "public" if start is not None else "random",
        "lr": lr,
        "seed": seed,
        **best,
        "epsilon": float(engine.get_epsilon(DELTA)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="scatter-cnn")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    config = ModelConfig(name=args.model)
    public = pretrain(config, load_medmnist(DATA_DIR / "pneumoniamnist.npz"))
    private = load_medmnist(DATA_DIR / "breastmnist.npz")
    runs = []
    for start in (None, public):
        for lr in (0.1, 0.5):
            for seed in (0, 1):
                runs.append(private_run(config, private, start, lr, seed))
                print(json.dumps(runs[-1]), flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps({"model": args.model, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
