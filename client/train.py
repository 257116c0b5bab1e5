"""Local training at a site: SGD, wrapped by Opacus for DP-SGD when privacy is on.

DP-SGD = per-sample gradient clipping + Gaussian noise + Poisson sampling, all by Opacus'
``PrivacyEngine``. The noise multiplier is chosen so that the *planned* number of local
epochs over the whole run spends the site's target epsilon; each round restores the site's
accountant history first, so the reported epsilon is cumulative. With FedProx a proximal
term keeps the local model near the global one (``client.proximal``); the reported training
loss is the data loss alone.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from client.proximal import ProximalTerm
from common.config import PrivacyConfig, TrainConfig
from common.privacy import HistoryEntry, noise_multiplier_for


@dataclass
class PreparedTraining:
    """Model, optimizer and loader ready for local epochs (Opacus-wrapped under DP)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    loader: DataLoader
    engine: PrivacyEngine | None
    noise_multiplier: float
    sample_rate: float


@dataclass(frozen=True)
class LocalTrainingResult:
    """What one site's local training produced (all of it stays on site except scalars)."""

    num_examples: int
    train_loss: float
    epsilon: float | None
    noise_multiplier: float
    sample_rate: float
    history: list[HistoryEntry]


def prepare_training(
    model: nn.Module,
    dataset: TensorDataset,
    train: TrainConfig,
    privacy: PrivacyConfig,
    *,
    planned_epochs: int,
    history: Sequence[HistoryEntry] = (),
) -> PreparedTraining:
    """Build the optimizer and loader; attach Opacus when ``privacy.enabled``."""
    model.train()  # Opacus refuses a model in eval mode
    loader = DataLoader(dataset, batch_size=train.batch_size, shuffle=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=train.learning_rate, momentum=train.momentum)
    if not privacy.enabled:
        return PreparedTraining(model, optimizer, loader, None, 0.0, 1.0 / len(loader))
    # With Poisson sampling Opacus uses sample rate 1 / len(loader), i.e. 1 / ceil(N / B).
    sample_rate = 1.0 / math.ceil(len(dataset) / train.batch_size)
    noise = noise_multiplier_for(
        target_epsilon=privacy.target_epsilon,
        delta=privacy.delta,
        sample_rate=sample_rate,
        epochs=planned_epochs,
        accountant=privacy.accountant,
    )
    engine = PrivacyEngine(accountant=privacy.accountant)
    engine.accountant.history = list(history)
    dp_model, dp_optimizer, dp_loader = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=noise,
        max_grad_norm=privacy.max_grad_norm,
        poisson_sampling=True,
    )
    return PreparedTraining(dp_model, dp_optimizer, dp_loader, engine, noise, sample_rate)


def run_epochs(
    prepared: PreparedTraining, epochs: int, proximal: ProximalTerm | None = None
) -> float:
    """Train for ``epochs`` passes; return the example-weighted mean training loss."""
    criterion = nn.CrossEntropyLoss()
    if proximal is not None and prepared.engine is not None:
        proximal.attach(prepared.optimizer)  # type: ignore[arg-type]
    prepared.model.train()
    total_loss, total_seen = 0.0, 0
    for _ in range(epochs):
        for images, labels in prepared.loader:
            if len(labels) == 0:  # Poisson sampling can draw an empty batch
                continue
            prepared.optimizer.zero_grad(set_to_none=True)
            loss = criterion(prepared.model(images), labels)
            if proximal is not None and prepared.engine is None:
                (loss + proximal.penalty()).backward()
            else:
                loss.backward()
            prepared.optimizer.step()
            total_loss += float(loss.detach()) * len(labels)
            total_seen += len(labels)
    return total_loss / max(total_seen, 1)


# Opacus/torch warnings that are expected here and would flood every round's log.
_EXPECTED_WARNINGS = (
    "Secure RNG turned off",  # secure_mode is a documented option, off by default
    "Optimal order is the largest alpha",  # RDP search bound; PRV is the default accountant
    "Full backward hook is firing",  # inputs never require grad in DP-SGD
)


def train_locally(
    model: nn.Module,
    dataset: TensorDataset,
    train: TrainConfig,
    privacy: PrivacyConfig,
    *,
    planned_epochs: int,
    history: Sequence[HistoryEntry] = (),
    proximal_mu: float = 0.0,
) -> LocalTrainingResult:
    """One round of local training; returns loss, cumulative epsilon and updated history.

    ``proximal_mu`` > 0 adds FedProx's proximal term anchored at ``model``'s weights as
    received (call this right after loading the global model).
    """
    proximal = ProximalTerm(model, proximal_mu) if proximal_mu > 0 else None
    with warnings.catch_warnings():
        for message in _EXPECTED_WARNINGS:
            warnings.filterwarnings("ignore", message=f".*{message}")
        prepared = prepare_training(
            model, dataset, train, privacy, planned_epochs=planned_epochs, history=history
        )
        loss = run_epochs(prepared, train.local_epochs, proximal)
    epsilon = None
    new_history: list[HistoryEntry] = []
    if prepared.engine is not None:
        new_history = [tuple(e) for e in prepared.engine.accountant.history]  # type: ignore[misc]
        epsilon = float(prepared.engine.get_epsilon(delta=privacy.delta))
    return LocalTrainingResult(
        num_examples=len(dataset),
        train_loss=loss,
        epsilon=epsilon,
        noise_multiplier=prepared.noise_multiplier,
        sample_rate=prepared.sample_rate,
        history=new_history,
    )
