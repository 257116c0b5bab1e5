"""From a membership attack's guesses to an empirical lower bound on epsilon.

Two conversions, both pure functions of counts (no training here):

- **One training run** (Steinke, Nasr & Jagielski 2023, "Privacy Auditing with One (1)
  Training Run", NeurIPS; arXiv:2305.08846, Theorem 3.1 / Algorithm 2 and Appendix D.1):
  ``m`` canaries are each included with probability 1/2 in a single training run; the
  auditor guesses "in" or "out" for ``r`` of them and is right ``v`` times. Under
  (epsilon, delta)-DP, the number of correct guesses is dominated by
  Binomial(r, e^eps / (1 + e^eps)) plus a delta term, so
  :func:`one_run_p_value` is the probability of ``>= v`` correct guesses if the algorithm
  were (eps, delta)-DP and :func:`one_run_epsilon_lower` is the largest eps rejected at
  confidence ``1 - beta``. :func:`guess_epsilon_interval` is the Clopper-Pearson interval of
  the guesses' accuracy mapped through ``log(q / (1 - q))`` (the epsilon of randomised
  response with that accuracy): a two-sided interval around the attack's own epsilon.
- **Rates** (Jagielski, Ullman & Oprea 2020, "Auditing Differentially Private Machine
  Learning", NeurIPS; Nasr et al. 2021, "Adversary Instantiation", IEEE S&P): by the
  hypothesis-testing view of DP (Kairouz, Oh & Viswanath 2015), any test separating
  neighbouring training sets has ``TPR <= e^eps * FPR + delta``, hence
  ``eps >= log((TPR - delta) / FPR)`` (:func:`epsilon_from_rates`). With Clopper-Pearson
  bounds TPR_low and FPR_high (each at ``1 - beta/2``, Bonferroni),
  ``log((TPR_low - delta) / FPR_high)`` holds with confidence ``1 - beta``
  (:func:`rates_epsilon_lower`). Strictly, this needs independent trials (one training run
  per trial); applied to the canaries of one run it is the approximation the one-run paper
  makes rigorous, so the audit's headline is the one-run bound and the rates bound is
  reported beside it.

Infinite or undefined values are returned as ``math.inf`` / ``0.0`` (a lower bound never
goes below 0: a failed attack proves nothing, it does not prove privacy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats


def clopper_pearson(successes: int, trials: int, confidence: float) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval of a binomial proportion (exact, conservative)."""
    if trials < 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes ({successes}) <= trials ({trials})")
    if trials == 0:
        return 0.0, 1.0
    alpha = 1.0 - confidence
    low = 0.0 if successes == 0 else stats.beta.ppf(alpha / 2, successes, trials - successes + 1)
    high = (
        1.0
        if successes == trials
        else stats.beta.ppf(1 - alpha / 2, successes + 1, trials - successes)
    )
    return float(low), float(high)


def epsilon_from_rates(tpr: float, fpr: float, delta: float) -> float:
    """``log((TPR - delta) / FPR)``: the epsilon a test with these rates proves (>= 0)."""
    if tpr - delta <= 0:
        return 0.0
    if fpr <= 0:
        return math.inf
    return max(0.0, math.log((tpr - delta) / fpr))


@dataclass(frozen=True)
class RatesBound:
    """The rates conversion: point estimate and the lower bound at the given confidence."""

    tpr: float
    fpr: float
    epsilon_point: float
    epsilon_lower: float


def rates_epsilon_lower(
    true_positives: int,
    positives: int,
    false_positives: int,
    negatives: int,
    *,
    delta: float,
    confidence: float = 0.95,
) -> RatesBound:
    """``log((TPR_low - delta) / FPR_high)`` with one-sided Clopper-Pearson bounds.

    Each rate gets a one-sided bound at ``1 - beta/2`` (``beta = 1 - confidence``), so
    both hold together with probability ``>= confidence``.
    """
    beta = 1.0 - confidence
    two_sided = 1.0 - beta  # a two-sided interval at 1 - beta has one-sided tails beta / 2
    tpr_low, _ = clopper_pearson(true_positives, positives, two_sided)
    _, fpr_high = clopper_pearson(false_positives, negatives, two_sided)
    tpr = true_positives / positives if positives else 0.0
    fpr = false_positives / negatives if negatives else 1.0
    return RatesBound(
        tpr=tpr,
        fpr=fpr,
        epsilon_point=epsilon_from_rates(tpr, fpr, delta),
        epsilon_lower=epsilon_from_rates(tpr_low, fpr_high, delta),
    )


def _accuracy_of(epsilon: float) -> float:
    """Accuracy of epsilon-DP randomised response, e^eps / (1 + e^eps)."""
    return 1.0 / (1.0 + math.exp(-epsilon))


def one_run_p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """P[>= v correct of r guesses] if training were (epsilon, delta)-DP (Steinke et al.).

    ``m`` canaries, each included with probability 1/2; ``r`` guesses (abstentions
    excluded); ``v`` correct. The delta term is the paper's Theorem 3.1 bound,
    ``2 m delta max_i P[v - i <= Binomial(r, q) < v] / i``.
    """
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= v ({v}) <= r ({r}) <= m ({m})")
    q = _accuracy_of(epsilon)
    p_value = float(stats.binom.sf(v - 1, r, q))  # P[Binomial(r, q) >= v]
    if delta > 0 and v > 0:
        below = stats.binom.pmf(range(v - 1, -1, -1), r, q).cumsum()  # i = 1..v
        worst = max(float(total) / i for i, total in enumerate(below, start=1))
        p_value += 2 * m * delta * worst
    return min(p_value, 1.0)


def one_run_epsilon_lower(
    m: int, r: int, v: int, *, delta: float, beta: float = 0.05, tolerance: float = 1e-4
) -> float:
    """Largest epsilon for which ``v`` correct guesses has p-value < ``beta`` (0 if none).

    Training cannot be (eps, delta)-DP for any eps below the returned value, except with
    probability ``beta`` over the canaries' random inclusion.
    """
    if r == 0 or one_run_p_value(m, r, v, 0.0, delta) >= beta:
        return 0.0
    low, high = 0.0, 1.0
    while one_run_p_value(m, r, v, high, delta) < beta:
        low, high = high, 2 * high
        if high > 1e3:  # unreachable for finite r: e^1000 is beyond any count
            return math.inf
    while high - low > tolerance:
        middle = (low + high) / 2
        if one_run_p_value(m, r, v, middle, delta) < beta:
            low = middle
        else:
            high = middle
    return low


def guess_epsilon_interval(r: int, v: int, confidence: float = 0.95) -> tuple[float, float, float]:
    """(low, point, high): the guesses' accuracy and its Clopper-Pearson interval as epsilon.

    Accuracy ``q`` maps to ``log(q / (1 - q))`` (floored at 0, ``inf`` at q = 1). Ignores
    delta, so ``low`` can exceed :func:`one_run_epsilon_lower` slightly.
    """

    def as_epsilon(q: float) -> float:
        if q >= 1.0:
            return math.inf
        if q <= 0.5:
            return 0.0
        return math.log(q / (1.0 - q))

    if r == 0:
        return 0.0, 0.0, math.inf
    low, high = clopper_pearson(v, r, confidence)
    return as_epsilon(low), as_epsilon(v / r), as_epsilon(high)
