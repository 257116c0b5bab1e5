"""Privacy accounting helpers around Opacus' accountants (no home-made accountant).

A site's spent privacy is the accountant's ``history``: a list of
``(noise_multiplier, sample_rate, steps)`` entries. It is stored between rounds so epsilon
accumulates instead of restarting, and restored into a fresh accountant each round.
"""

from __future__ import annotations

from collections.abc import Sequence

from opacus.accountants import create_accountant
from opacus.accountants.utils import get_noise_multiplier

HistoryEntry = tuple[float, float, int]


def noise_multiplier_for(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    epochs: int,
    accountant: str,
) -> float:
    """Noise multiplier that spends ``target_epsilon`` over ``epochs`` passes at this rate."""
    return float(
        get_noise_multiplier(
            target_epsilon=target_epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            epochs=epochs,
            accountant=accountant,
        )
    )


def epsilon_of(history: Sequence[HistoryEntry], *, delta: float, accountant: str) -> float:
    """Epsilon spent by a history of DP-SGD steps (0.0 for an empty history)."""
    if not history:
        return 0.0
    acc = create_accountant(mechanism=accountant)
    acc.history = [(float(n), float(q), int(s)) for n, q, s in history]
    return float(acc.get_epsilon(delta=delta))
