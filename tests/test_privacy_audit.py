"""The privacy audit: epsilon conversions on known counts, SSIM, and the audit's ordering.

The ordering test runs the real audit at a small size: without DP the canary attack must
prove clear leakage and the inversion must rebuild the image; with DP the lower bound must
stay at or below the accountant's claimed epsilon and the reconstruction must fail.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from medfed.cli import main
from simulations.audit.bounds import (
    clopper_pearson,
    epsilon_from_rates,
    guess_epsilon_interval,
    one_run_epsilon_lower,
    one_run_p_value,
    rates_epsilon_lower,
)
from simulations.audit.canary import GUESS_FRACTIONS, audit_scores
from simulations.audit.ssim import ssim


def _as_epsilon(q: float) -> float:
    return math.log(q / (1 - q))


def test_epsilon_from_rates_is_the_hypothesis_testing_conversion():
    assert epsilon_from_rates(0.5, 0.05, 0.0) == pytest.approx(math.log(10))
    assert epsilon_from_rates(0.5, 0.05, 0.1) == pytest.approx(math.log(8))
    assert epsilon_from_rates(0.05, 0.05, 0.0) == 0.0  # chance: proves nothing
    assert epsilon_from_rates(0.01, 0.5, 0.0) == 0.0  # never negative
    assert math.isinf(epsilon_from_rates(0.9, 0.0, 1e-5))


def test_clopper_pearson_matches_its_closed_form_at_the_extremes():
    n = 40
    low, high = clopper_pearson(n, n, 0.95)
    assert low == pytest.approx(0.025 ** (1 / n)) and high == 1.0
    low, high = clopper_pearson(0, n, 0.95)
    assert low == 0.0 and high == pytest.approx(1 - 0.025 ** (1 / n))
    low, high = clopper_pearson(20, 40, 0.95)
    assert low < 0.5 < high


def test_rates_lower_bound_on_a_perfect_attack():
    # TPR 100/100, FPR 0/100: each rate bounded at 97.5% one-sided
    bound = rates_epsilon_lower(100, 100, 0, 100, delta=0.0, confidence=0.95)
    tpr_low = 0.025 ** (1 / 100)
    assert bound.epsilon_lower == pytest.approx(math.log(tpr_low / (1 - tpr_low)), rel=1e-6)
    assert math.isinf(bound.epsilon_point)
    with_delta = rates_epsilon_lower(100, 100, 0, 100, delta=1e-2, confidence=0.95)
    assert with_delta.epsilon_lower < bound.epsilon_lower


def test_one_run_bound_for_all_guesses_right_without_delta():
    # P[Binomial(r, q) >= r] = q^r = beta  =>  q = beta^(1/r)
    r, beta = 100, 0.05
    expected = _as_epsilon(beta ** (1 / r))
    found = one_run_epsilon_lower(1000, r, r, delta=0.0, beta=beta)
    assert found == pytest.approx(expected, abs=1e-3)
    assert one_run_p_value(1000, r, r, expected, 0.0) == pytest.approx(beta, rel=1e-6)


def test_one_run_bound_pays_for_delta_and_proves_nothing_at_chance():
    plain = one_run_epsilon_lower(1000, 100, 95, delta=0.0)
    with_delta = one_run_epsilon_lower(1000, 100, 95, delta=1e-5)
    assert 0 < with_delta < plain
    assert one_run_epsilon_lower(1000, 100, 50, delta=1e-5) == 0.0
    assert one_run_epsilon_lower(1000, 0, 0, delta=1e-5) == 0.0


def test_guess_interval_contains_the_point_estimate():
    low, point, high = guess_epsilon_interval(100, 90)
    assert point == pytest.approx(_as_epsilon(0.9))
    assert low < point < high


def test_audit_scores_separate_members_only_when_scores_do():
    rng = np.random.default_rng(0)
    included = rng.random(200) < 0.5
    perfect = audit_scores(included.astype(float), included, delta=1e-5)
    assert perfect.correct == perfect.guesses
    # the best fraction is tested at beta / len(GUESS_FRACTIONS) (Bonferroni)
    beta = 0.05 / len(GUESS_FRACTIONS)
    assert perfect.epsilon_lower == pytest.approx(
        one_run_epsilon_lower(200, perfect.guesses, perfect.guesses, delta=1e-5, beta=beta)
    )
    assert perfect.epsilon_lower > 3
    blind = audit_scores(rng.random(200), included, delta=1e-5)
    assert blind.epsilon_lower < 0.5


def test_a_bound_above_the_claim_refutes_it():
    included = np.random.default_rng(2).random(200) < 0.5
    scores = included.astype(float)  # an attack that sees membership perfectly
    assert audit_scores(scores, included, delta=1e-5, epsilon_claimed=1.0).claim_refuted
    assert not audit_scores(scores, included, delta=1e-5, epsilon_claimed=8.0).claim_refuted
    assert not audit_scores(scores, included, delta=1e-5, dp=False).claim_refuted


def test_ssim_is_one_for_identical_images_and_near_zero_for_noise():
    rng = np.random.default_rng(1)
    image = rng.random((16, 16))
    assert ssim(image, image) == pytest.approx(1.0)
    assert abs(ssim(image, rng.random((16, 16)))) < 0.2
    assert ssim(image, 1.0 - image) < 0


def test_bad_audit_settings_are_one_line_errors(capsys):
    assert main(["privacy", "audit", "--canaries", "3"]) == 2
    assert main(["privacy", "audit", "--epsilon", "0"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all(e.startswith("medfed: error: ") for e in errors)


@pytest.mark.slow
def test_audit_finds_leakage_without_dp_and_respects_the_claim_with_dp(tmp_path, capsys):
    # Prepare / Execute: the real command at its quick size (about a minute on one core)
    assert main(["privacy", "audit", "--quick", "--epsilon", "8", "--out", str(tmp_path)]) == 0

    # Assert: the ordering, read back from the files the command wrote
    printed = capsys.readouterr().out
    assert "Empirical privacy audit" in printed and "no DP" in printed
    saved = json.loads((tmp_path / "audit.json").read_text())
    plain = saved["canary_audit"]["without_dp"]
    private = saved["canary_audit"]["with_dp"]
    assert "claim holds" in printed and saved["claim_refuted"] is False
    assert plain["epsilon_claimed"] is None
    assert 0 < private["epsilon_claimed"] <= 8.0 + 1e-6
    assert plain["epsilon_lower"] > 1.0  # clear leakage without DP
    assert plain["epsilon_lower"] > private["epsilon_lower"]
    assert private["epsilon_lower"] <= private["epsilon_claimed"]
    inversion = saved["inversion"]
    assert inversion["mean_ssim_without_dp"] > 0.8
    assert inversion["mean_ssim_with_dp"] < 0.3
    assert inversion["noise_multiplier"] == private["noise_multiplier"] > 0
    for index in range(len(inversion["ssim_with_dp"])):
        assert (tmp_path / f"inversion-{index}.png").read_bytes().startswith(b"\x89PNG")
