"""Privacy accounting helpers around Opacus' accountants (no home-made accountant).

A site's spent privacy is the accountant's ``history``: a list of
``(noise_multiplier, sample_rate, steps)`` entries. It is stored between rounds so epsilon
accumulates instead of restarting, and restored into a fresh accountant each round.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from opacus.accountants import create_accountant
from opacus.accountants.utils import get_noise_multiplier

from common.errors import ConfigError

HistoryEntry = tuple[float, float, int]
# RDP's search hit its largest order: the bound is valid, only looser than it could be.
_RDP_ALPHA_WARNING = ".*Optimal order is the largest alpha"


def noise_multiplier_for(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str,
    prior: Sequence[HistoryEntry] = (),
) -> float:
    """Noise multiplier that spends at most ``target_epsilon`` over ``steps`` at this rate.

    Opacus' search returns a multiplier whose epsilon is below the target, computed the way
    :func:`epsilon_of` computes it, so a run that takes exactly the planned steps stays
    within its target (its last round is not declined).

    ``prior``: spend the run makes besides these steps (an on-site generator's DP-SGD,
    ``client.augment``); the multiplier is then the one at which ``prior`` composed with
    these steps stays within ``target_epsilon`` (the same bisection as Opacus'
    ``get_noise_multiplier``, over Opacus' accountant with the whole history).
    """
    if prior:
        return _noise_after(
            prior,
            target_epsilon=target_epsilon,
            delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant=accountant,
        )
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_RDP_ALPHA_WARNING)
            return float(
                get_noise_multiplier(
                    target_epsilon=target_epsilon,
                    target_delta=delta,
                    sample_rate=sample_rate,
                    steps=steps,
                    accountant=accountant,
                )
            )
    except ValueError as problem:  # Opacus: "The privacy budget is too low."
        raise ConfigError(
            f"cannot reach epsilon {target_epsilon} in {steps} steps at sample rate "
            f"{sample_rate:.3g}: {problem}"
        ) from None


_MAX_SIGMA = 2000.0  # Opacus' get_noise_multiplier gives up at the same bound
_EPSILON_TOLERANCE = 0.01  # Opacus' default


def _noise_after(
    prior: Sequence[HistoryEntry],
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str,
) -> float:
    """Smallest noise (to Opacus' tolerance) at which ``prior`` + these steps fit the target."""

    def spend(sigma: float) -> float:
        with warnings.catch_warnings():  # Opacus' PRV at sample rate 1: log(0), harmless
            warnings.filterwarnings("ignore", message="divide by zero", category=RuntimeWarning)
            history = [*prior, (sigma, sample_rate, steps)]
            return epsilon_of(history, delta=delta, accountant=accountant)

    already = epsilon_of(prior, delta=delta, accountant=accountant)
    low, high, eps_high = 0.0, 10.0, math.inf
    while eps_high > target_epsilon:
        high *= 2
        eps_high = spend(high)
        if high > _MAX_SIGMA:
            raise ConfigError(
                f"cannot reach epsilon {target_epsilon} in {steps} steps at sample rate "
                f"{sample_rate:.3g} after a prior spend of epsilon {already:.3g}"
            )
    while target_epsilon - eps_high > _EPSILON_TOLERANCE:
        sigma = (low + high) / 2
        eps = spend(sigma)
        if eps < target_epsilon:
            high, eps_high = sigma, eps
        else:
            low = sigma
    return high


def epsilon_of(history: Sequence[HistoryEntry], *, delta: float, accountant: str) -> float:
    """Epsilon spent by a history of DP-SGD steps (0.0 for an empty history)."""
    if not history:
        return 0.0
    acc = create_accountant(mechanism=accountant)
    acc.history = [(float(n), float(q), int(s)) for n, q, s in history]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_RDP_ALPHA_WARNING)
        return float(acc.get_epsilon(delta=delta))


def merge_history(
    previous: Sequence[HistoryEntry], new: Sequence[HistoryEntry]
) -> list[HistoryEntry]:
    """Concatenate histories, folding equal (noise, rate) neighbours into one entry."""
    merged: list[HistoryEntry] = [tuple(e) for e in previous]  # type: ignore[misc]
    for noise, rate, steps in new:
        if merged and merged[-1][0] == noise and merged[-1][1] == rate:
            merged[-1] = (noise, rate, merged[-1][2] + steps)
        else:
            merged.append((noise, rate, steps))
    return merged


@dataclass(frozen=True)
class BudgetCheck:
    """Whether a site may take one more round, and what it would have spent after it."""

    allowed: bool
    run_epsilon_after: float  # this run's epsilon after the planned round
    lifetime_epsilon_after: float  # all runs at the site after it (NaN: no site budget)
    reason: str = ""


def check_budget(
    *,
    run_history: Sequence[HistoryEntry],
    other_runs: Sequence[Sequence[HistoryEntry]],
    next_round: HistoryEntry,
    delta: float,
    accountant: str,
    run_budget: float,
    site_budget: float | None,
) -> BudgetCheck:
    """Project the spend of one more round against the run's and the site's budgets.

    ``run_budget`` caps this run (``privacy.target-epsilon``); ``site_budget`` (the site's
    own ``epsilon-budget``, if it set one) caps the composition of every run recorded at the
    site plus this round, accounted with the same accountant.
    """
    run_after_history = merge_history(run_history, [next_round])
    run_after = epsilon_of(run_after_history, delta=delta, accountant=accountant)
    lifetime_after = math.nan
    if site_budget is not None:
        lifetime = [e for run in other_runs for e in run]
        lifetime_after = epsilon_of(
            [*lifetime, *run_after_history], delta=delta, accountant=accountant
        )
    reason = ""
    if run_after > run_budget:
        reason = (
            f"this round would take the run's epsilon to {run_after:.3g}, "
            f"above its target {run_budget:g}"
        )
    elif site_budget is not None and lifetime_after > site_budget:
        reason = (
            f"this round would take the site's lifetime epsilon to {lifetime_after:.3g}, "
            f"above its budget {site_budget:g}"
        )
    return BudgetCheck(not reason, run_after, lifetime_after, reason)
