"""Canary membership audit in one training run (Steinke, Nasr & Jagielski 2023).

One site trains with the product's own code (``client.train.plan_round`` and
``train_locally``: SGD, wrapped by Opacus' DP-SGD when privacy is on) for a few rounds on
its ordinary images plus the canaries drawn in (each with probability 1/2; the others are
the "trained without" half, under the same seeds otherwise). The attack scores each canary
by its loss under the final model (a low loss on a random label means memorised) and
guesses "in" for the lowest-loss canaries and "out" for the highest-loss ones, abstaining
on the middle. ``simulations.audit.bounds`` turns the correct guesses into ``epsilon_lower``.

The guess sizes are fixed in advance (``GUESS_FRACTIONS``); the audit reports the best
of them with a Bonferroni correction (each is tested at ``beta / len(GUESS_FRACTIONS)``),
so choosing the best one does not inflate the bound. The claimed epsilon is the site's
accountant (``common.privacy.epsilon_of``) over the same history.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from client.train import plan_round, train_locally
from common.config import ModelConfig, PrivacyConfig, TrainConfig
from common.data.preprocess import model_logits
from common.models import build_model
from common.privacy import HistoryEntry, epsilon_of
from simulations.audit.bounds import (
    guess_epsilon_interval,
    one_run_epsilon_lower,
    rates_epsilon_lower,
)
from simulations.audit.data import CanarySet

GUESS_FRACTIONS = (0.1, 0.25, 0.5, 1.0)  # of the canaries, split between "in" and "out"


@dataclass(frozen=True)
class CanaryTraining:
    """How the audited site trains (the product's settings, sized for an audit)."""

    model: str = "small-cnn"
    rounds: int = 8
    epochs_per_round: int = 15
    batch_size: int = 16
    learning_rate: float = 0.05
    momentum: float = 0.9
    seed: int = 0


@dataclass(frozen=True)
class CanaryAudit:
    """The attack's guesses and the epsilon they prove, next to the claimed epsilon."""

    dp: bool
    epsilon_claimed: float | None  # None without DP (no guarantee claimed)
    noise_multiplier: float
    canaries: int  # m
    included: int
    guesses: int  # r
    correct: int  # v
    guess_fraction: float
    epsilon_lower: float  # one-run bound at confidence 1 - beta (delta-aware)
    epsilon_point: float  # the attack's own epsilon (accuracy as randomised response)
    epsilon_interval: tuple[float, float]  # Clopper-Pearson, two-sided, as epsilon
    rates_tpr: float
    rates_fpr: float
    rates_epsilon_lower: float  # log((TPR_low - delta) / FPR_high) at the same guesses
    confidence: float
    delta: float

    @property
    def claim_refuted(self) -> bool:
        """True if the attack proves more leakage than the accountant claims (a DP bug)."""
        return self.epsilon_claimed is not None and self.epsilon_lower > self.epsilon_claimed


def train_site(
    images: torch.Tensor,
    labels: torch.Tensor,
    training: CanaryTraining,
    privacy: PrivacyConfig,
    on_round: Callable[[int], None] | None = None,
) -> tuple[nn.Module, list[HistoryEntry], float]:
    """Train a fresh model as a site would; return it, its accountant history and sigma."""
    torch.manual_seed(training.seed)
    model = build_model(ModelConfig(name=training.model, num_classes=2), images.shape[1])
    train = TrainConfig(
        local_epochs=training.epochs_per_round,
        batch_size=training.batch_size,
        learning_rate=training.learning_rate,
        momentum=training.momentum,
    )
    dataset = TensorDataset(images, labels)
    plan = plan_round(len(dataset), train, privacy, planned_rounds=training.rounds)
    history: list[HistoryEntry] = []
    for round_index in range(training.rounds):
        # a fresh module per round, as a site receives the global model each round
        fresh = build_model(ModelConfig(name=training.model, num_classes=2), images.shape[1])
        fresh.load_state_dict(_plain_state(model))
        result = train_locally(fresh, dataset, train, privacy, plan=plan, history=history)
        history = list(result.history)
        model = fresh
        if on_round is not None:
            on_round(round_index + 1)
    final = build_model(ModelConfig(name=training.model, num_classes=2), images.shape[1])
    final.load_state_dict(_plain_state(model))
    return final.eval(), history, plan.noise_multiplier


def _plain_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k.removeprefix("_module."): v.detach().clone() for k, v in model.state_dict().items()}


def membership_scores(model: nn.Module, canaries: CanarySet) -> np.ndarray:
    """Minus each canary's cross-entropy loss on its label: higher = more likely trained on."""
    with torch.no_grad():
        logits = model_logits(model.eval(), canaries.images)
        loss = nn.functional.cross_entropy(logits, canaries.labels, reduction="none")
    return -loss.numpy()


def audit_scores(
    scores: np.ndarray,
    included: np.ndarray,
    *,
    delta: float,
    confidence: float = 0.95,
    dp: bool = True,
    epsilon_claimed: float | None = None,
    noise_multiplier: float = 0.0,
) -> CanaryAudit:
    """Guess membership from ``scores`` at each of ``GUESS_FRACTIONS``; keep the best bound."""
    m = len(scores)
    order = np.argsort(-scores, kind="stable")  # most member-like first
    beta = (1.0 - confidence) / len(GUESS_FRACTIONS)
    best: CanaryAudit | None = None
    for fraction in GUESS_FRACTIONS:
        k = max(1, min(m // 2, round(fraction * m / 2)))  # 1.0: all (but one if m is odd)
        guessed_in, guessed_out = order[:k], order[m - k :]
        correct = int(included[guessed_in].sum() + (~included[guessed_out]).sum())
        r = len(guessed_in) + len(guessed_out)
        lower = one_run_epsilon_lower(m, r, correct, delta=delta, beta=beta)
        low, point, high = guess_epsilon_interval(r, correct, confidence)
        rates = rates_epsilon_lower(
            int(included[guessed_in].sum()),
            int(included.sum()),
            int((~included[guessed_in]).sum()),
            int((~included).sum()),
            delta=delta,
            confidence=1.0 - beta,
        )
        candidate = CanaryAudit(
            dp=dp,
            epsilon_claimed=epsilon_claimed,
            noise_multiplier=noise_multiplier,
            canaries=m,
            included=int(included.sum()),
            guesses=r,
            correct=correct,
            guess_fraction=fraction,
            epsilon_lower=lower,
            epsilon_point=point,
            epsilon_interval=(low, high),
            rates_tpr=rates.tpr,
            rates_fpr=rates.fpr,
            rates_epsilon_lower=rates.epsilon_lower,
            confidence=confidence,
            delta=delta,
        )
        if best is None or (candidate.epsilon_lower, candidate.epsilon_point) > (
            best.epsilon_lower,
            best.epsilon_point,
        ):
            best = candidate
    assert best is not None
    return best


def run_canary_audit(
    ordinary: tuple[torch.Tensor, torch.Tensor],
    canaries: CanarySet,
    training: CanaryTraining,
    privacy: PrivacyConfig,
    *,
    confidence: float = 0.95,
    on_round: Callable[[int], None] | None = None,
) -> CanaryAudit:
    """Train once with the included canaries; score all canaries; bound epsilon."""
    keep = torch.from_numpy(canaries.included)
    images = torch.cat([ordinary[0], canaries.images[keep]])
    labels = torch.cat([ordinary[1], canaries.labels[keep]])
    model, history, sigma = train_site(images, labels, training, privacy, on_round)
    claimed = (
        epsilon_of(history, delta=privacy.delta, accountant=privacy.accountant)
        if privacy.enabled
        else None
    )
    return audit_scores(
        membership_scores(model, canaries),
        canaries.included,
        delta=privacy.delta,
        confidence=confidence,
        dp=privacy.enabled,
        epsilon_claimed=claimed,
        noise_multiplier=sigma,
    )
