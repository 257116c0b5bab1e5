"""Privacy accounting helpers around Opacus' accountants (no home-made accountant).

A site's spent privacy is the accountant's ``history``: a list of
``(noise_multiplier, sample_rate, steps)`` entries. It is stored between rounds so epsilon
accumulates instead of restarting, and restored into a fresh accountant each round.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from opacus.accountants import create_accountant
from opacus.accountants.utils import MAX_SIGMA, get_noise_multiplier

from common.errors import ConfigError

HistoryEntry = tuple[float, float, int]
# Opacus' get_noise_multiplier stops its search within this much epsilon below the target.
EPSILON_TOLERANCE = 0.01
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
        with warnings.catch_warnings():  # Opacus' PRV at sample rate 1: log(0), harmless
            warnings.filterwarnings("ignore", message="divide by zero", category=RuntimeWarning)
            noise = noise_multiplier_after(
                prior,
                target_epsilon=target_epsilon,
                delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant=accountant,
            )
        if noise is None:
            raise ConfigError(
                f"cannot reach epsilon {target_epsilon} in {steps} steps at sample rate "
                f"{sample_rate:.3g} after the run's other spend (an on-site generator)"
            )
        return noise
    try:
        return _calibrated(target_epsilon, delta, sample_rate, steps, accountant)
    except ValueError as problem:  # Opacus: "The privacy budget is too low."
        raise ConfigError(
            f"cannot reach epsilon {target_epsilon} in {steps} steps at sample rate "
            f"{sample_rate:.3g}: {problem}"
        ) from None


@functools.lru_cache(maxsize=64)
def _calibrated(
    target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str
) -> float:
    """Opacus' noise search, remembered per process: the simulated hospitals a worker plays
    share their recipe, and the search takes seconds (PRV), once per site otherwise."""
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


def noise_multiplier_after(
    history: Sequence[HistoryEntry],
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str,
    candidate: float | None = None,
    epsilon_tolerance: float = EPSILON_TOLERANCE,
) -> float | None:
    """Noise multiplier for ``steps`` more steps at ``sample_rate`` after ``history``.

    Composing the recorded ``history`` with the new steps (folded as the ledger folds them,
    accounted by Opacus' accountant exactly as :func:`epsilon_of` does) spends at most
    ``target_epsilon``, and less than ``epsilon_tolerance`` below it: Opacus'
    ``get_noise_multiplier`` search (doubling, then bisection), over a history instead of
    a single entry. ``candidate`` (e.g. the noise of the last round) is kept when it
    already lands in that window, so a re-planned run keeps its noise round after round.
    None: nothing is left (the history alone spends the target).
    """
    acc = create_accountant(mechanism=accountant)

    def spent(noise: float) -> float:
        acc.history = merge_history(history, [(float(noise), float(sample_rate), int(steps))])
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_RDP_ALPHA_WARNING)
            return float(acc.get_epsilon(delta=delta))

    if epsilon_of(history, delta=delta, accountant=accountant) >= target_epsilon:
        return None
    if (
        candidate is not None
        and candidate > 0
        and target_epsilon - epsilon_tolerance <= spent(candidate) <= target_epsilon
    ):
        return float(candidate)
    low, high, high_spent = 0.0, 10.0, math.inf
    while high_spent > target_epsilon:
        high *= 2
        if high > MAX_SIGMA:
            return None
        high_spent = spent(high)
    while target_epsilon - high_spent > epsilon_tolerance:
        middle = (low + high) / 2
        middle_spent = spent(middle)
        if middle_spent < target_epsilon:
            high, high_spent = middle, middle_spent
        else:
            low = middle
    return high


def epsilon_of(history: Sequence[HistoryEntry], *, delta: float, accountant: str) -> float:
    """Epsilon spent by a history of DP-SGD steps (0.0 for an empty history).

    Remembered per process for recent histories: a site's round asks for the same one twice
    (the budget check before training, the ledger record after), and Opacus' PRV accountant
    takes a noticeable fraction of a second each time.
    """
    if not history:
        return 0.0
    entries = tuple((float(n), float(q), int(s)) for n, q, s in history)
    return _epsilon(entries, float(delta), accountant)


@functools.lru_cache(maxsize=256)
def _epsilon(history: tuple[HistoryEntry, ...], delta: float, accountant: str) -> float:
    acc = create_accountant(mechanism=accountant)
    acc.history = list(history)
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
