"""Per-site privacy state (its signed ledger): epsilon survives restarts; a spent budget means
decline."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Message, MessageType

import common.privacy
from client.budget import SitePrivacy
from client.privacy_state import (
    LEDGER_KEY_FILE,
    LEGACY_STATE_FILE,
    PrivacyLedgerStore,
    claim_state_dir,
)
from common import keys
from common.config import MedfedConfig
from common.errors import ConfigError
from common.ledger import LEDGER_FILE, read_ledger, record_from_wire, update_digest
from common.privacy import epsilon_of
from common.signing import load_public_key, public_key_path
from tests.clientapp_harness import CapturingHarness


@pytest.fixture
def config(small_config: MedfedConfig) -> MedfedConfig:
    """Two planned rounds; RDP keeps the accountant fast in tests."""
    return small_config.replace(**{"privacy.accountant": "rdp"})


def _metrics(reply: Message) -> dict[str, float]:
    return {k: float(v) for k, v in reply.content[keys.METRICS].items()}  # type: ignore[arg-type]


def test_restarted_client_continues_from_the_stored_state(
    small_site: Path, config: MedfedConfig, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    first = _metrics(CapturingHarness(small_site, config, state_dir=state).train(1))

    # A new process: fresh Flower context, same state directory, same run.
    second = _metrics(CapturingHarness(small_site, config, state_dir=state).train(2))

    steps_per_round = round(1 / first[keys.SAMPLE_RATE]) * config.train.local_epochs
    from_scratch = epsilon_of(
        [(first[keys.NOISE_MULTIPLIER], first[keys.SAMPLE_RATE], 2 * steps_per_round)],
        delta=config.privacy.delta,
        accountant="rdp",
    )
    assert second[keys.EPSILON] == pytest.approx(from_scratch, rel=1e-9)
    assert second[keys.EPSILON] > first[keys.EPSILON]
    assert second[keys.NOISE_MULTIPLIER] == first[keys.NOISE_MULTIPLIER]
    saved = PrivacyLedgerStore(state).load()
    assert saved["1"].history == [
        (first[keys.NOISE_MULTIPLIER], first[keys.SAMPLE_RATE], 2 * steps_per_round)
    ]
    records = PrivacyLedgerStore(state).records()
    assert [r.round for r in records] == [1, 2]
    assert records[-1].epsilon == second[keys.EPSILON]


def test_reply_carries_the_signed_record_of_the_update_it_sends(
    small_site: Path, config: MedfedConfig, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    reply = CapturingHarness(small_site, config, state_dir=state).train(1)

    sent = record_from_wire(dict(reply.content[keys.ATTESTATION]))  # type: ignore[arg-type]
    (kept,) = PrivacyLedgerStore(state).records()
    assert sent == kept
    assert sent.update_sha256 == update_digest(reply.content[keys.ARRAYS])  # type: ignore[arg-type]
    public = load_public_key(public_key_path(state / LEDGER_KEY_FILE))
    assert sent.signature_ok(public)
    assert stat.S_IMODE((state / LEDGER_FILE).stat().st_mode) == 0o600


def test_a_new_run_starts_its_own_accounting(
    small_site: Path, config: MedfedConfig, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    run_1 = _metrics(CapturingHarness(small_site, config, state_dir=state, run_id=1).train(1))

    run_2 = _metrics(CapturingHarness(small_site, config, state_dir=state, run_id=2).train(1))

    assert run_2[keys.EPSILON] == pytest.approx(run_1[keys.EPSILON])
    assert set(PrivacyLedgerStore(state).load()) == {"1", "2"}


def test_round_beyond_the_planned_budget_is_declined_not_crashed(
    small_site: Path, config: MedfedConfig
) -> None:
    harness = CapturingHarness(small_site, config)
    trained = [harness.train(r) for r in (1, 2)]
    state_before = (harness.state_dir / LEDGER_FILE).read_text()  # type: ignore[operator]

    declined = harness.train(3)  # one round more than the noise was calibrated for

    metrics = _metrics(declined)
    assert metrics[keys.TRAIN_STATUS] == keys.STATUS_DECLINED_BUDGET
    assert metrics[keys.NUM_EXAMPLES] == 0
    assert metrics[keys.EPSILON] == pytest.approx(_metrics(trained[1])[keys.EPSILON])
    assert _metrics(trained[1])[keys.TRAIN_STATUS] == keys.STATUS_TRAINED
    # Same metric keys as a trained reply (Flower's FedAvg requires it) ...
    assert set(metrics) == set(_metrics(trained[1]))
    # ... the global model comes back unchanged and nothing more was spent.
    sent = harness.global_model().state_dict()
    for name, array in declined.content[keys.ARRAYS].items():
        np.testing.assert_array_equal(array.numpy(), sent[name].numpy())
    assert (harness.state_dir / LEDGER_FILE).read_text() == state_before  # type: ignore[operator]


def test_site_lifetime_budget_declines_a_second_run(
    small_site: Path, config: MedfedConfig, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    first_run = CapturingHarness(small_site, config, state_dir=state, run_id=1)
    spent = [_metrics(first_run.train(r))[keys.EPSILON] for r in (1, 2)][-1]
    budget = {keys.NODE_EPSILON_BUDGET: spent + 0.5}  # less than one more round costs

    second_run = CapturingHarness(small_site, config, state_dir=state, run_id=2, node_extras=budget)
    reply = _metrics(second_run.train(1))

    assert reply[keys.TRAIN_STATUS] == keys.STATUS_DECLINED_BUDGET
    assert reply[keys.EPSILON] == 0.0  # the second run has spent nothing
    runs = PrivacyLedgerStore(state).load()
    assert "2" not in runs  # only its noise calibration was stored, beside the ledger
    assert sum(steps for _, _, steps in runs["1"].history) > 0


def test_site_with_a_budget_declines_a_run_without_dp(
    small_site: Path, config: MedfedConfig
) -> None:
    no_dp = config.replace(**{"privacy.enabled": False})

    # a site whose policy allows runs without DP, but whose lifetime budget still refuses them
    extras = {keys.NODE_EPSILON_BUDGET: 4.0, keys.NODE_REQUIRE_DP: "false"}
    reply = CapturingHarness(small_site, no_dp, node_extras=extras)

    metrics = _metrics(reply.train(1))
    assert metrics[keys.TRAIN_STATUS] == keys.STATUS_DECLINED_BUDGET
    assert keys.EPSILON not in metrics


def test_unreadable_ledger_stops_training_with_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / LEDGER_FILE).write_text("{not json\n")

    with pytest.raises(ConfigError, match="fails its check") as excinfo:
        PrivacyLedgerStore(tmp_path).load()

    assert "\n" not in str(excinfo.value)


def test_unreadable_legacy_state_stops_training_with_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / LEGACY_STATE_FILE).write_text("{not json")

    with pytest.raises(ConfigError, match="cannot read the privacy state") as excinfo:
        PrivacyLedgerStore(tmp_path).load()

    assert "\n" not in str(excinfo.value)


def test_a_second_site_on_a_state_dir_is_refused_and_the_owner_carries_on(
    small_site: Path, config: MedfedConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Two SuperNodes given one state-dir used to book into one ledger under one run key, each
    # seeing the other's rounds as its own redone ones (re-planning its noise every round).
    shared = tmp_path / "one-state-dir"

    def site(name: str) -> CapturingHarness:
        extras = {keys.NODE_SITE_ID: name}
        return CapturingHarness(small_site, config, state_dir=shared, node_extras=extras)

    owner, intruder = site("hospital-a"), site("hospital-b")
    owner.train(1)

    refused = intruder.send(MessageType.TRAIN, 1, check=False)

    assert refused.has_error() and refused.error.reason.startswith("ConfigError at the site")
    assert f"{shared} belongs to site 'hospital-a', not 'hospital-b'" in caplog.text
    assert [r.round for r in read_ledger(shared / LEDGER_FILE)] == [1]  # nothing booked
    owner.train(2)
    assert [r.round for r in read_ledger(shared / LEDGER_FILE)] == [1, 2]


def test_an_unreadable_site_stamp_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "site-id").write_bytes(b"\xff\xfe")

    with pytest.raises(ConfigError, match="which site owns this state directory") as excinfo:
        claim_state_dir(tmp_path, "hospital-a")

    assert "\n" not in str(excinfo.value)


def test_sites_of_one_recipe_in_one_process_search_for_their_noise_once(
    tmp_path: Path, config: MedfedConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A simulation worker plays many hospitals with the same recipe; Opacus' noise search
    # (seconds under PRV) used to run again for every site it had not played before.
    searches: list[float] = []
    real_search = common.privacy.get_noise_multiplier

    def counting(**kwargs: object) -> float:
        searches.append(float(kwargs["target_epsilon"]))  # type: ignore[arg-type]
        return real_search(**kwargs)

    monkeypatch.setattr(common.privacy, "get_noise_multiplier", counting)
    recipe = {"target_epsilon": 6.125, "delta": 1e-5, "sample_rate": 0.5, "steps": 7}
    noises = [
        SitePrivacy(PrivacyLedgerStore(tmp_path / site), "run-1", config.privacy, None).calibrate(
            **recipe, accountant="rdp"
        )
        for site in ("hospital-a", "hospital-b", "hospital-c")
    ]

    assert searches == [6.125]
    assert noises[0] == noises[1] == noises[2] > 0
    assert epsilon_of([(noises[0], 0.5, 7)], delta=1e-5, accountant="rdp") <= 6.125
