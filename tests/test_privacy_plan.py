"""``medfed privacy plan``: the sites' own planning code, projected round by round."""

from __future__ import annotations

import json

import pytest

import client.train
import common.planning
from common.config import MedfedConfig
from common.planning import plan_round, projected_epsilons
from common.privacy import epsilon_of, noise_multiplier_for
from medfed.cli import main

PLAN = ["privacy", "plan", "--epsilon", "4", "--delta", "1e-5", "--rounds", "20"]


def _plan_json(capsys: pytest.CaptureFixture[str], *extra: str) -> dict:
    code = main([*PLAN, "--site-size", "1000", "--accountant", "rdp", "--json", *extra])
    assert code == 0
    return json.loads(capsys.readouterr().out)


def test_the_site_and_the_cli_share_one_planner() -> None:
    assert client.train.plan_round is common.planning.plan_round


def test_plan_spends_the_target_exactly_by_the_last_round(
    capsys: pytest.CaptureFixture[str],
) -> None:
    plan = _plan_json(capsys)

    epsilons = [r["epsilon"] for r in plan["rounds"]]
    assert [r["round"] for r in plan["rounds"]] == list(range(1, 21))
    assert epsilons == sorted(epsilons) and len(set(epsilons)) == 20
    assert 3.9 < epsilons[-1] <= 4.0
    # default batch 32 at 1000 examples: 32 batches, one epoch = 32 steps per round
    assert plan["batch_size"] == 32
    assert plan["steps_per_round"] == 32
    assert plan["sample_rate"] == pytest.approx(1 / 32)
    expected_noise = noise_multiplier_for(
        target_epsilon=4.0, delta=1e-5, sample_rate=1 / 32, steps=20 * 32, accountant="rdp"
    )
    assert plan["noise_multiplier"] == pytest.approx(expected_noise, rel=1e-12)
    tenth = epsilon_of([(expected_noise, 1 / 32, 10 * 32)], delta=1e-5, accountant="rdp")
    assert epsilons[9] == pytest.approx(tenth, rel=1e-12)


def test_plan_honours_the_training_settings(capsys: pytest.CaptureFixture[str]) -> None:
    plan = _plan_json(capsys, "--batches-per-epoch", "10", "--local-steps", "5")

    assert plan["batch_size"] == 100
    assert plan["sample_rate"] == pytest.approx(0.1)
    assert plan["steps_per_round"] == 5


def test_fixed_noise_is_projected_not_calibrated(capsys: pytest.CaptureFixture[str]) -> None:
    plan = _plan_json(capsys, "--noise-multiplier", "0.8")

    assert plan["noise_multiplier"] == 0.8
    assert plan["rounds"][-1]["epsilon"] > 4.0  # more than the target: shown, not hidden


def test_projection_matches_the_budget_check_history() -> None:
    config = MedfedConfig().replace(**{"privacy.accountant": "rdp", "federation.num-rounds": 3})
    plan = plan_round(500, config.train, config.privacy, planned_rounds=3)

    projected = dict(projected_epsilons(plan, 3, config.privacy))

    per_round = [plan.history_entry()] * 3  # what a site records, round by round
    assert projected[3] == pytest.approx(
        epsilon_of(per_round, delta=config.privacy.delta, accountant="rdp"), rel=1e-9
    )


def test_plan_table_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    code = main([*PLAN, "--site-size", "1000", "--accountant", "rdp"])

    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert code == 0
    assert "noise multiplier" in out and "projected ε after each round" in out
    assert out.count("yes") == 20


def test_empty_site_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = main([*PLAN, "--site-size", "0"])

    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("medfed: error:") and "--site-size" in err and "\n" not in err


def test_unreachable_budget_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = main([*PLAN[:3], "0.001", "--rounds", "50", "--site-size", "20", "--accountant", "rdp"])

    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("medfed: error:") and "\n" not in err


def test_bad_setting_names_its_key(capsys: pytest.CaptureFixture[str]) -> None:
    code = main([*PLAN, "--site-size", "1000", "--delta", "2", "--accountant", "rdp"])

    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "privacy.delta" in err and "\n" not in err
