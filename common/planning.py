"""How much one round of local training at a site does and spends: the plan both the site
(``client.train``, before touching its data) and ``medfed privacy plan`` use.

- the loader batch is ``train.batch-size``, or ``ceil(N / train.batches-per-epoch)`` so that
  every site has the same sample rate; Opacus' Poisson rate is ``1 / len(loader)``;
- a round is ``train.local-steps`` logical steps, or ``train.local-epochs`` passes;
- the noise multiplier is ``privacy.noise-multiplier`` if set, else the one that spends
  ``privacy.target-epsilon`` over the planned rounds x steps (Opacus' search);
- re-planning: a site that plans round r with a recorded history other than the plan's
  (rounds 1..r-1 at that noise) - a round redone after the run resumed from an earlier
  checkpoint, or rounds it missed while down - calibrates the noise of the remaining rounds
  r..R so that the history composed with them spends at most the target
  (``common.privacy.noise_multiplier_after``). An uninterrupted run keeps the plan's noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from common.config import PrivacyConfig, TrainConfig
from common.errors import ConfigError
from common.privacy import (
    HistoryEntry,
    epsilon_of,
    merge_history,
    noise_multiplier_after,
    noise_multiplier_for,
)

# (target_epsilon, delta, sample_rate, steps, accountant) -> noise multiplier
Calibrate = Callable[..., float]
# (history, target_epsilon, delta, sample_rate, steps, accountant, candidate) -> noise or None
Replan = Callable[..., float | None]


@dataclass(frozen=True)
class RoundPlan:
    """What one round of local training will do (and, under DP, spend)."""

    batch_size: int  # loader batch (the expected logical batch under Poisson sampling)
    sample_rate: float  # 1 / batches per epoch (Opacus' Poisson rate)
    steps: int  # logical optimizer steps this round
    noise_multiplier: float  # 0.0 without DP
    planned_noise: float = 0.0  # the noise of the uninterrupted plan (differs: re-planned)

    @property
    def replanned(self) -> bool:
        """Whether the noise was re-planned from a history other than the plan's."""
        return self.noise_multiplier != self.planned_noise

    def history_entry(self) -> HistoryEntry:
        """The accountant entry this round adds."""
        return (self.noise_multiplier, self.sample_rate, self.steps)


def plan_round(
    num_examples: int,
    train: TrainConfig,
    privacy: PrivacyConfig,
    *,
    planned_rounds: int,
    calibrate: Calibrate = noise_multiplier_for,
    server_round: int = 1,
    history: Sequence[HistoryEntry] = (),
    replan: Replan = noise_multiplier_after,
    prior: Sequence[HistoryEntry] = (),
) -> RoundPlan:
    """Batch, sample rate, steps and noise of one round at a site with ``num_examples``.

    ``calibrate`` finds the noise for the target (Opacus' search takes seconds: the client
    passes one that remembers its answer for the run in the site's state directory).
    ``history`` is what this run already spent at the site (its ledger) before
    ``server_round``: when it is not the plan's own rounds 1..server_round-1, ``replan``
    calibrates the noise of the remaining rounds against what is left of the target.
    ``prior`` is the run's spend besides its rounds (an on-site generator's training,
    ``client.augment``): the calibrated noise leaves room for it, and ``history`` holds it
    (booked, or about to be) before the rounds, so that the planned run is on plan.
    """
    if num_examples < 1:
        raise ConfigError("a site needs at least one training example")
    if train.batches_per_epoch > 0:
        batch_size = math.ceil(num_examples / train.batches_per_epoch)
    else:
        batch_size = train.batch_size
    batches = math.ceil(num_examples / batch_size)
    sample_rate = 1.0 / batches
    steps = train.local_steps if train.local_steps > 0 else train.local_epochs * batches
    noise = planned = 0.0
    if privacy.enabled:
        noise = planned = privacy.noise_multiplier
        if noise <= 0:
            noise = planned = calibrate(
                target_epsilon=privacy.target_epsilon,
                delta=privacy.delta,
                sample_rate=sample_rate,
                steps=planned_rounds * steps,
                accountant=privacy.accountant,
                **({"prior": list(prior)} if prior else {}),
            )
            noise = _replanned(
                noise,
                history,
                privacy,
                sample_rate=sample_rate,
                steps=steps,
                remaining=planned_rounds - server_round + 1,
                planned_rounds=planned_rounds,
                replan=replan,
                prior=prior,
            )
    return RoundPlan(batch_size, sample_rate, steps, noise, planned)


def _replanned(
    planned: float,
    history: Sequence[HistoryEntry],
    privacy: PrivacyConfig,
    *,
    sample_rate: float,
    steps: int,
    remaining: int,
    planned_rounds: int,
    replan: Replan,
    prior: Sequence[HistoryEntry] = (),
) -> float:
    """The noise of the remaining rounds given the run's history (``planned`` if on plan).

    On plan (the history is rounds 1..r-1 at the planned noise, so history + the remaining
    rounds is the planned run itself) and past the last planned round (the budget check
    declines it) the planned noise stands. Otherwise the remaining rounds are calibrated to
    what is left; if nothing is left the planned noise stands and the budget check declines.
    """
    if remaining < 1:
        return planned
    on_plan = merge_history(prior, [(planned, sample_rate, planned_rounds * steps)])
    if merge_history(history, [(planned, sample_rate, remaining * steps)]) == on_plan:
        return planned
    last = history[-1] if history else None
    candidate = last[0] if last is not None and last[1] == sample_rate else planned
    noise = replan(
        history=list(history),
        target_epsilon=privacy.target_epsilon,
        delta=privacy.delta,
        sample_rate=sample_rate,
        steps=remaining * steps,
        accountant=privacy.accountant,
        candidate=candidate,
    )
    return planned if noise is None else noise


def projected_epsilons(
    plan: RoundPlan, rounds: int, privacy: PrivacyConfig
) -> Iterator[tuple[int, float]]:
    """``(round, epsilon after it)`` for ``rounds`` rounds of ``plan`` at one site.

    The history is the one a site accumulates (one merged entry, ``round x steps`` steps),
    accounted with the run's accountant and delta, exactly as ``client.budget`` checks it.
    """
    for done in range(1, rounds + 1):
        history = [(plan.noise_multiplier, plan.sample_rate, done * plan.steps)]
        yield done, epsilon_of(history, delta=privacy.delta, accountant=privacy.accountant)
