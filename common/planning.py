"""How much one round of local training at a site does and spends: the plan both the site
(``client.train``, before touching its data) and ``medfed privacy plan`` use.

- the loader batch is ``train.batch-size``, or ``ceil(N / train.batches-per-epoch)`` so that
  every site has the same sample rate; Opacus' Poisson rate is ``1 / len(loader)``;
- a round is ``train.local-steps`` logical steps, or ``train.local-epochs`` passes;
- the noise multiplier is ``privacy.noise-multiplier`` if set, else the one that spends
  ``privacy.target-epsilon`` over the planned rounds x steps (Opacus' search).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from common.config import PrivacyConfig, TrainConfig
from common.errors import ConfigError
from common.privacy import HistoryEntry, epsilon_of, noise_multiplier_for

# (target_epsilon, delta, sample_rate, steps, accountant) -> noise multiplier
Calibrate = Callable[..., float]


@dataclass(frozen=True)
class RoundPlan:
    """What one round of local training will do (and, under DP, spend)."""

    batch_size: int  # loader batch (the expected logical batch under Poisson sampling)
    sample_rate: float  # 1 / batches per epoch (Opacus' Poisson rate)
    steps: int  # logical optimizer steps this round
    noise_multiplier: float  # 0.0 without DP

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
    prior: Sequence[HistoryEntry] = (),
) -> RoundPlan:
    """Batch, sample rate, steps and noise of one round at a site with ``num_examples``.

    ``calibrate`` finds the noise for the target (Opacus' search takes seconds: the client
    passes one that remembers its answer for the run in the site's state directory).
    ``prior`` is the run's spend besides its rounds (an on-site generator's training,
    ``client.augment``): the calibrated noise leaves room for it.
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
    noise = 0.0
    if privacy.enabled:
        noise = privacy.noise_multiplier
        if noise <= 0:
            noise = calibrate(
                target_epsilon=privacy.target_epsilon,
                delta=privacy.delta,
                sample_rate=sample_rate,
                steps=planned_rounds * steps,
                accountant=privacy.accountant,
                **({"prior": list(prior)} if prior else {}),
            )
    return RoundPlan(batch_size, sample_rate, steps, noise)


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
