"""Re-planning a site's noise from its recorded history: no wasted budget on a resume.

A site whose ledger is not the plan's (a round redone after the run resumed from an earlier
checkpoint, rounds missed while it was down) calibrates the remaining rounds' noise to what
is left of the run's epsilon; an uninterrupted run keeps the plan's noise.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from flwr.app import Message

from client.privacy_state import PrivacyLedgerStore
from common import keys
from common.config import MedfedConfig
from common.ledger import check_chain, check_epsilons, read_ledger
from common.planning import plan_round
from common.privacy import (
    EPSILON_TOLERANCE,
    epsilon_of,
    merge_history,
    noise_multiplier_after,
    noise_multiplier_for,
)
from common.signing import load_public_key, public_key_path
from medfed.cli import main
from medfed.privacy_views import print_spend
from tests.clientapp_harness import CapturingHarness

TARGET, DELTA, RATE, STEPS, ROUNDS = 8.0, 1e-5, 1 / 8, 8, 4


def _config(**overrides: object) -> MedfedConfig:
    settings = {
        "privacy.accountant": "rdp",
        "privacy.target-epsilon": TARGET,
        "privacy.delta": DELTA,
        "federation.num-rounds": ROUNDS,
        "train.batches-per-epoch": round(1 / RATE),
        "train.local-steps": STEPS,
        **overrides,
    }
    return MedfedConfig().replace(**settings)


# Opacus' search takes a second or more: each distinct calibration once per session
_calibrate = functools.cache(noise_multiplier_for)


def _planned() -> float:
    return _calibrate(
        target_epsilon=TARGET,
        delta=DELTA,
        sample_rate=RATE,
        steps=ROUNDS * STEPS,
        accountant="rdp",
    )


def _spent(history: list) -> float:
    return epsilon_of(history, delta=DELTA, accountant="rdp")


def _plan(server_round: int, history: list) -> float:
    config = _config()
    plan = plan_round(
        64,
        config.train,
        config.privacy,
        planned_rounds=ROUNDS,
        calibrate=_calibrate,
        server_round=server_round,
        history=history,
    )
    assert plan.sample_rate == RATE and plan.steps == STEPS
    return plan.noise_multiplier


def test_an_uninterrupted_run_keeps_the_planned_noise() -> None:
    planned = _planned()
    for server_round in range(1, ROUNDS + 1):
        history = [(planned, RATE, (server_round - 1) * STEPS)] if server_round > 1 else []
        assert _plan(server_round, history) == planned
    # past the last planned round: the planned noise, which the budget check declines
    assert _plan(ROUNDS + 1, [(planned, RATE, ROUNDS * STEPS)]) == planned


def test_a_redone_round_raises_the_noise_and_the_run_still_ends_within_its_target() -> None:
    planned = _planned()
    # resumed from round 1's checkpoint after round 2 was trained: round 2 again, 3 to go
    history = [(planned, RATE, 2 * STEPS)]
    replanned = _plan(2, history)

    assert replanned > planned
    composed = _spent(merge_history(history, [(replanned, RATE, 3 * STEPS)]))
    assert composed <= TARGET
    assert composed >= TARGET - EPSILON_TOLERANCE
    # the next rounds keep the re-planned noise (it is still exactly on the new plan)
    after_redo = merge_history(history, [(replanned, RATE, STEPS)])
    assert _plan(3, after_redo) == replanned
    assert _plan(4, merge_history(after_redo, [(replanned, RATE, STEPS)])) == replanned


def test_a_site_that_missed_rounds_can_afford_less_noise() -> None:
    planned = _planned()
    # down for rounds 1 and 2: only rounds 3 and 4 to spend the whole target on
    late = _plan(3, [])
    assert late < planned
    composed = _spent([(late, RATE, 2 * STEPS)])
    assert TARGET - EPSILON_TOLERANCE <= composed <= TARGET
    # down for round 2 only
    missed_one = _plan(3, [(planned, RATE, STEPS)])
    assert late < missed_one < planned
    composed = _spent(merge_history([(planned, RATE, STEPS)], [(missed_one, RATE, 2 * STEPS)]))
    assert TARGET - EPSILON_TOLERANCE <= composed <= TARGET


def test_nothing_left_means_no_noise_to_plan() -> None:
    spent_it_all = [(_planned(), RATE, 5 * STEPS)]
    assert _spent(spent_it_all) > TARGET
    assert (
        noise_multiplier_after(
            spent_it_all,
            target_epsilon=TARGET,
            delta=DELTA,
            sample_rate=RATE,
            steps=STEPS,
            accountant="rdp",
        )
        is None
    )
    # the site then plans the planned noise and its budget check declines the round
    assert _plan(4, spent_it_all) == _planned()


def _metrics(reply: Message) -> dict[str, float]:
    return {k: float(v) for k, v in reply.content[keys.METRICS].items()}  # type: ignore[arg-type]


def test_a_site_redoing_a_round_after_a_resume_trains_every_planned_round(
    small_site: Path, small_config: MedfedConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: 4 planned rounds; the run is resumed from round 1's checkpoint after the
    # site had trained (and booked) round 2, so round 2 comes again
    config = small_config.replace(
        **{"privacy.accountant": "rdp", "federation.num-rounds": 4, "privacy.target-epsilon": 8.0}
    )
    state = tmp_path / "state"
    site = CapturingHarness(small_site, config, state_dir=state)
    # Execute
    replies = [_metrics(site.train(r)) for r in (1, 2, 2, 3, 4)]
    # Assert: no round declined, the redone round and the rest trained at re-planned noise
    assert all(m[keys.TRAIN_STATUS] == keys.STATUS_TRAINED for m in replies)
    noise = [m[keys.NOISE_MULTIPLIER] for m in replies]
    assert noise[0] == noise[1] < noise[2] == noise[3] == noise[4]
    final = replies[-1][keys.EPSILON]
    assert 8.0 - EPSILON_TOLERANCE <= final <= 8.0
    # the ledger books the lost round honestly and still verifies
    ledger = state / "privacy-ledger.jsonl"
    records = read_ledger(ledger)
    assert [r.round for r in records if r is not None] == [1, 2, 2, 3, 4]
    key = load_public_key(public_key_path(state / "ledger-key.pem"))
    assert check_chain(records, key) == []
    assert check_epsilons(records) == []
    assert PrivacyLedgerStore(state).run("1").redone == [2]
    print_spend(state)
    shown = " ".join(capsys.readouterr().out.split())
    assert "round 2 redone after a resume (trained 2 times" in shown
    public_key = public_key_path(state / "ledger-key.pem")
    assert main(["privacy", "verify", str(ledger), "--public-key", str(public_key)]) == 0
    verdict = " ".join(capsys.readouterr().out.split())
    assert "VALID" in verdict and "round 2 redone after a resume" in verdict


def test_a_site_back_from_being_down_re_plans_and_spends_its_whole_target(
    small_site: Path, small_config: MedfedConfig, tmp_path: Path
) -> None:
    # Prepare: 4 planned rounds; the site is down for rounds 2 and 3
    config = small_config.replace(
        **{"privacy.accountant": "rdp", "federation.num-rounds": 4, "privacy.target-epsilon": 8.0}
    )
    site = CapturingHarness(small_site, config, state_dir=tmp_path / "state")
    # Execute
    first, last = _metrics(site.train(1)), _metrics(site.train(4))
    # Assert: the last round takes the budget the missed rounds left, within the target
    assert last[keys.TRAIN_STATUS] == keys.STATUS_TRAINED
    assert last[keys.NOISE_MULTIPLIER] < first[keys.NOISE_MULTIPLIER]
    assert 8.0 - EPSILON_TOLERANCE <= last[keys.EPSILON] <= 8.0
