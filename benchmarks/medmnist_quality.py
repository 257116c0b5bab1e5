"""Model quality on MedMNIST: centralized vs FedAvg vs DP FedAvg, next to MedMNIST's figures.

For each dataset (official 28x28 ``.npz`` files in ``../shared/data/medmnist``):
1. ``central``: pooled training split, non-DP (the upper bound), per registered CNN;
2. ``fedavg``: 5 hospitals from a per-class Dirichlet(0.5) label-skew split of the training
   split, non-DP, Flower's ``FedAvg`` aggregation;
3. ``dp8`` / ``dp2``: the same hospitals with DP-SGD at epsilon 8 / 2 per site (delta 1e-5),
   the federated DP recipe from STACK-NOTES: small-cnn, every site samples with q = 0.5
   (``train.batches-per-epoch=2``), one DP-SGD step per round, clip 1.0, local SGD lr 1.0,
   Flower's ``FedAvgM`` (server lr 1.0, momentum 0.9), 120 rounds, PRV accountant.
Sites train with medfed's client code (``client.train.plan_round`` / ``train_locally``: the
same Opacus wrapping, Poisson sampling and accountant as the ClientApp) and the server step is
Flower's own strategy object (``aggregate_train``), driven by a plain loop instead of the
Flower simulation engine (Ray start-up and messaging would add minutes over 120 rounds and
change no number). Model selection (the epoch or round kept) and the operating threshold
use the official validation split only; the official test split is touched once, for the
figure. Seeds are fixed. Test AUC is the exact AUC of the pooled test scores.

Usage (the figures in BENCHMARKS.md):
    PYTHONPATH=. .venv/bin/python benchmarks/medmnist_quality.py --out medmnist_quality.json
Options: --datasets pneumoniamnist breastmnist  --settings central fedavg dp8 dp2
         --threads 2  --seed 0  --quick (a smoke run: few epochs and rounds)
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg, FedAvgM
from flwr.supercore.task_identity import TaskIdentity
from sklearn.metrics import roc_curve
from torch import nn
from torch.utils.data import TensorDataset

from client.evaluate import predict_scores
from client.train import plan_round, prepare_training, run_steps, train_locally
from common import keys
from common.config import MedfedConfig
from common.metrics import classification_metrics
from common.models import build_model
from common.params import arrays_to_model, model_to_arrays
from common.privacy import HistoryEntry, epsilon_of, noise_multiplier_for

DATA_DIR = Path(__file__).resolve().parents[1] / "../shared/data/medmnist"
# MedMNIST v2 (Yang et al., Sci Data 2023), ResNet-18 (28): test AUC / ACC.
REFERENCE = {"pneumoniamnist": (0.944, 0.854), "breastmnist": (0.901, 0.863)}
Split = tuple[torch.Tensor, torch.Tensor]  # images (N, 1, 28, 28) in [0, 1], labels (N,)


def load_medmnist(path: Path) -> dict[str, Split]:
    """The train / val / test arrays of an official MedMNIST ``.npz`` file."""
    with np.load(path) as arrays:
        splits = {}
        for split in ("train", "val", "test"):
            images = torch.from_numpy(arrays[f"{split}_images"]).float().div(255)
            # grayscale (N, H, W) or RGB (N, H, W, 3) -> (N, C, H, W)
            images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
            labels = torch.from_numpy(arrays[f"{split}_labels"].reshape(-1).astype(np.int64))
            splits[split] = (images, labels)
    return splits


def dirichlet_sites(
    labels: np.ndarray, num_sites: int, alpha: float, seed: int
) -> list[np.ndarray]:
    """Per-class Dirichlet(alpha) label skew: each class's images dealt to sites by p ~ Dir."""
    rng = np.random.RandomState(seed)
    sites: list[list[int]] = [[] for _ in range(num_sites)]
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        rng.shuffle(members)
        shares = rng.dirichlet(np.full(num_sites, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
        for site, part in enumerate(np.split(members, cuts)):
            sites[site].extend(part.tolist())
    return [np.sort(np.asarray(s, dtype=np.int64)) for s in sites]


@dataclass
class Outcome:
    """One benchmark row."""

    dataset: str
    setting: str
    model: str
    test_auc: float
    test_acc: float  # threshold 0.5, as MedMNIST reports ACC
    test_balanced_acc: float  # at the threshold chosen on validation
    test_sensitivity: float
    test_specificity: float
    threshold: float
    val_auc: float
    selected: int  # epoch or round kept (by validation AUC)
    epsilon: float | None
    seconds: float
    val_curve: list[float] = field(default_factory=list)


def _val_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The class-1 score threshold maximising balanced accuracy (Youden's J) on validation."""
    fpr, tpr, thresholds = roc_curve(labels, scores[:, 1])
    return float(min(1.0, thresholds[int(np.argmax(tpr - fpr))]))


class Selector:
    """Keeps the weights with the best validation AUC."""

    def __init__(self, val: Split) -> None:
        self.val = val
        self.best_auc, self.best_at, self.curve = -1.0, 0, []
        self.best_state: dict[str, torch.Tensor] = {}

    def offer(self, model: nn.Module, step: int) -> None:
        scores, _ = predict_scores(model, self.val[0])
        auc = classification_metrics(self.val[1].numpy(), scores, 0.0).auc
        self.curve.append(round(auc, 4))
        if auc > self.best_auc:
            self.best_auc, self.best_at = auc, step
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}


def _outcome(
    dataset: str, setting: str, net: nn.Module, selector: Selector, test: Split, **extra: object
) -> Outcome:
    net.load_state_dict(selector.best_state)
    val_scores, _ = predict_scores(net, selector.val[0])
    threshold = _val_threshold(selector.val[1].numpy(), val_scores)
    test_scores, _ = predict_scores(net, test[0])
    labels = test[1].numpy()
    at_half = classification_metrics(labels, test_scores, 0.0)
    at_val = classification_metrics(labels, test_scores, 0.0, threshold=threshold)
    return Outcome(
        dataset=dataset,
        setting=setting,
        test_auc=at_half.auc,
        test_acc=at_half.accuracy,
        test_balanced_acc=at_val.balanced_accuracy,
        test_sensitivity=at_val.sensitivity,
        test_specificity=at_val.specificity,
        threshold=threshold,
        val_auc=selector.best_auc,
        selected=selector.best_at,
        val_curve=selector.curve,
        **extra,  # type: ignore[arg-type]
    )


def central_batch(num_examples: int) -> int:
    """At least ~20 steps per epoch: N // 20, between 16 and 128 (PneumoniaMNIST: 128)."""
    return max(16, min(128, num_examples // 20))


def fedavg_batch(num_examples: int, num_sites: int) -> int:
    """About 10 steps per epoch at an average site, between 16 and 64 (PneumoniaMNIST: 64)."""
    return max(16, min(64, num_examples // (10 * num_sites)))


def centralized(
    dataset: str, splits: dict[str, Split], model_name: str, epochs: int, seed: int
) -> Outcome:
    """Pooled non-DP training: SGD lr 0.05, momentum 0.9, best epoch on val."""
    config = MedfedConfig().replace(
        **{
            "model.name": model_name,
            "privacy.enabled": False,
            "train.batch-size": central_batch(len(splits["train"][1])),
            "train.learning-rate": 0.05,
            "train.momentum": 0.9,
        }
    )
    started = time.monotonic()
    torch.manual_seed(seed)
    images, labels = splits["train"]
    train = TensorDataset(images, labels)
    model = build_model(config.model, images.shape[1])
    plan = plan_round(len(train), config.train, config.privacy, planned_rounds=epochs)
    prepared = prepare_training(model, train, config.train, config.privacy, plan=plan)
    selector = Selector(splits["val"])
    for epoch in range(1, epochs + 1):
        run_steps(prepared, plan.steps)
        selector.offer(model, epoch)
    return _outcome(
        dataset,
        "central",
        model,
        selector,
        splits["test"],
        model=model_name,
        epsilon=None,
        seconds=time.monotonic() - started,
    )


@dataclass(frozen=True)
class FedSetting:
    """A federated configuration of the benchmark."""

    name: str
    config: MedfedConfig
    rounds: int
    server_lr: float = 1.0
    server_momentum: float = 0.0


def fed_settings(rounds_fedavg: int, rounds_dp: int, batch: int) -> dict[str, FedSetting]:
    """The non-DP FedAvg baseline (local ``batch``) and the DP recipe at two budgets."""
    fedavg = MedfedConfig().replace(
        **{
            "model.name": "cnn-medium",
            "privacy.enabled": False,
            "train.batch-size": batch,
            "train.learning-rate": 0.05,
            "train.momentum": 0.9,
            "train.local-epochs": 1,
            "federation.num-rounds": rounds_fedavg,
        }
    )
    dp = MedfedConfig().replace(
        **{
            "model.name": "small-cnn",
            "privacy.enabled": True,
            "privacy.delta": 1e-5,
            "privacy.max-grad-norm": 1.0,
            "privacy.accountant": "prv",
            "train.batches-per-epoch": 2,
            "train.local-steps": 1,
            "train.learning-rate": 1.0,
            "train.momentum": 0.0,
            "train.max-physical-batch": 256,
            "federation.num-rounds": rounds_dp,
        }
    )
    return {
        "fedavg": FedSetting("fedavg", fedavg, rounds_fedavg),
        "dp8": FedSetting(
            "dp8", dp.replace(**{"privacy.target-epsilon": 8.0}), rounds_dp, 1.0, 0.9
        ),
        "dp2": FedSetting(
            "dp2", dp.replace(**{"privacy.target-epsilon": 2.0}), rounds_dp, 1.0, 0.9
        ),
    }


def _reply(arrays: ArrayRecord, num_examples: int, node: int) -> Message:
    content = RecordDict(
        {keys.ARRAYS: arrays, keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: num_examples})}
    )
    return Message(content=content, dst_node_id=node, message_type=MessageType.TRAIN)


def federated(
    dataset: str,
    splits: dict[str, Split],
    sites: list[np.ndarray],
    setting: FedSetting,
    seed: int,
) -> Outcome:
    """Rounds of local training at every site + Flower's FedAvg / FedAvgM aggregation."""
    config = setting.config
    started = time.monotonic()
    images, labels = splits["train"]
    site_data = [TensorDataset(images[idx], labels[idx]) for idx in sites]
    torch.manual_seed(seed)
    global_model = build_model(config.model, images.shape[1])
    arrays = model_to_arrays(global_model)
    strategy: FedAvg = FedAvg()
    if setting.server_momentum > 0 or setting.server_lr != 1.0:
        strategy = FedAvgM(
            server_learning_rate=setting.server_lr, server_momentum=setting.server_momentum
        )
        strategy.current_arrays = arrays  # set by configure_train under Flower's own loop
    calibrate: Callable[..., float] = cache(noise_multiplier_for)
    plans = [
        plan_round(
            len(d),
            config.train,
            config.privacy,
            planned_rounds=setting.rounds,
            calibrate=calibrate,
        )
        for d in site_data
    ]
    histories: list[list[HistoryEntry]] = [[] for _ in sites]
    selector = Selector(splits["val"])
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    for server_round in range(1, setting.rounds + 1):
        replies = []
        for index, data in enumerate(site_data):
            torch.manual_seed(seed * 100_003 + server_round * 101 + index)
            model = build_model(config.model, images.shape[1])  # fresh, as in the ClientApp
            arrays_to_model(arrays, model)
            result = train_locally(
                model,
                data,
                config.train,
                config.privacy,
                plan=plans[index],
                history=histories[index],
            )
            histories[index] = result.history
            replies.append(_reply(model_to_arrays(model), len(data), index + 1))
        aggregated, _ = strategy.aggregate_train(server_round, replies)
        assert aggregated is not None
        arrays = aggregated
        arrays_to_model(arrays, global_model)
        selector.offer(global_model, server_round)
    epsilon = None
    if config.privacy.enabled:
        epsilon = max(
            epsilon_of(h, delta=config.privacy.delta, accountant=config.privacy.accountant)
            for h in histories
        )
    return _outcome(
        dataset,
        setting.name,
        global_model,
        selector,
        splits["test"],
        model=config.model.name,
        epsilon=epsilon,
        seconds=time.monotonic() - started,
    )


def _row(o: Outcome) -> str:
    ref_auc = REFERENCE.get(o.dataset, (float("nan"), float("nan")))[0]
    eps = "-" if o.epsilon is None else f"{o.epsilon:.2f}"
    return (
        f"| {o.dataset} | {o.setting} | {o.model} | {o.test_auc:.3f} | {o.test_acc:.3f} | "
        f"{o.test_balanced_acc:.3f} ({o.test_sensitivity:.2f}/{o.test_specificity:.2f}) | "
        f"{o.test_auc - ref_auc:+.3f} | {o.val_auc:.3f} @ {o.selected} | {eps} | "
        f"{o.seconds:.0f} |"
    )


HEADER = (
    "| dataset | setting | model | test AUC | test ACC@0.5 | test bal. ACC (sens/spec) "
    "@ val threshold | AUC minus ResNet-18(28) | val AUC @ epoch/round | max ε | s |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--datasets", nargs="+", default=["pneumoniamnist", "breastmnist"])
    parser.add_argument("--settings", nargs="+", default=["central", "fedavg", "dp8", "dp2"])
    parser.add_argument("--central-models", nargs="+", default=["small-cnn", "cnn-medium"])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--rounds-fedavg", type=int, default=30)
    parser.add_argument("--rounds-dp", type=int, default=120)
    parser.add_argument("--sites", type=int, default=5)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 epochs / rounds")
    parser.add_argument("--out", type=Path, help="write every outcome (and curves) as JSON")
    args = parser.parse_args()
    if args.quick:
        args.epochs = args.rounds_fedavg = args.rounds_dp = 2
    torch.set_num_threads(args.threads)
    logging.getLogger("flwr").setLevel(logging.WARNING)  # no per-round INFO lines
    warnings.filterwarnings("ignore", message=".*Secure RNG turned off")
    warnings.filterwarnings("ignore", message=".*Full backward hook is firing")
    outcomes: list[Outcome] = []
    print(HEADER, flush=True)
    for dataset in args.datasets:
        splits = load_medmnist(args.data_dir / f"{dataset}.npz")
        sites = dirichlet_sites(splits["train"][1].numpy(), args.sites, args.alpha, args.seed)
        batch = fedavg_batch(len(splits["train"][1]), args.sites)
        settings = fed_settings(args.rounds_fedavg, args.rounds_dp, batch)
        sizes = [len(s) for s in sites]
        positive = [float(splits["train"][1][s].float().mean()) for s in sites]
        print(
            f"<!-- {dataset}: site sizes {sizes}, positive share "
            f"{[round(p, 2) for p in positive]} -->",
            flush=True,
        )
        for name in args.settings:
            if name == "central":
                for model_name in args.central_models:
                    outcome = centralized(dataset, splits, model_name, args.epochs, args.seed)
                    outcomes.append(outcome)
                    print(_row(outcome), flush=True)
            else:
                outcome = federated(dataset, splits, sites, settings[name], args.seed)
                outcomes.append(outcome)
                print(_row(outcome), flush=True)
    if args.out:
        args.out.write_text(json.dumps([asdict(o) for o in outcomes], indent=1))


if __name__ == "__main__":
    main()
