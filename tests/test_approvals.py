"""The site's allow-list of apps: approve, revoke, list, audit; and how the server names a refusal.

The gate itself runs against real processes in ``tests/test_app_approval.py``; here the
pieces it relies on are checked directly.
"""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord

from client.approvals import APPROVALS_FILE, AUDIT_FILE, ApprovalStore, release_hash
from common import keys
from common.errors import ConfigError, MedfedError
from medfed.cli import main
from tests._fed_helpers import FakeGrid, error_reply, recording_strategy, task_identity

__all__ = ["task_identity"]  # the fixture, imported for pytest

HASH_A = "a" * 64
HASH_B = "b" * 64


def test_approve_revoke_and_audit(tmp_path: Path) -> None:
    store = ApprovalStore(tmp_path / "state")

    store.approve(HASH_A.upper(), "reviewed release 0.1.0")
    store.approve(HASH_B)
    store.approve(HASH_A)  # idempotent: keeps the first approval

    assert set(store.approvals()) == {HASH_A, HASH_B}
    assert store.approvals()[HASH_A].note == "reviewed release 0.1.0"
    assert store.is_approved(HASH_A) and not store.is_approved("c" * 64)
    assert not store.is_approved(None)
    assert store.revoke(HASH_A) and not store.revoke(HASH_A)
    assert not ApprovalStore(tmp_path / "state").is_approved(HASH_A)  # read from disk
    for name in (APPROVALS_FILE, AUDIT_FILE):
        assert stat.S_IMODE((tmp_path / "state" / name).stat().st_mode) == 0o600
    actions = [line.split("\t")[2] for line in (tmp_path / "state" / AUDIT_FILE).open()]
    assert actions == ["approve", "approve", "approve", "revoke"]


def test_bad_hashes_and_a_damaged_list_are_refused_in_one_line(tmp_path: Path) -> None:
    store = ApprovalStore(tmp_path)
    with pytest.raises(ConfigError, match="is not a FAB hash"):
        store.approve("deadbeef")
    (tmp_path / APPROVALS_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read the approvals"):
        store.is_approved(HASH_A)


def test_an_installed_release_without_sources_cannot_be_approved_by_name(tmp_path: Path) -> None:
    with pytest.raises(MedfedError, match=r"no pyproject\.toml"):
        release_hash(tmp_path)


def test_cli_manages_the_list_and_refuses_bad_input_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = str(tmp_path / "state")

    assert main(["site", "approve", HASH_A, "--note", "ok", "--state-dir", state]) == 0
    assert main(["site", "approvals", "--state-dir", state]) == 0
    listed = capsys.readouterr().out
    assert HASH_A in listed
    assert main(["site", "revoke", HASH_A, "--state-dir", state]) == 0
    assert main(["site", "revoke", HASH_A, "--state-dir", state]) == 1
    capsys.readouterr()
    assert main(["site", "approve", "xyz", "--state-dir", state]) == 2
    assert main(["site", "approve", "--state-dir", state]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors == [
        "medfed: error: 'xyz' is not a FAB hash (64 hexadecimal digits, SHA-256)",
        "medfed: error: give either a FAB hash or --installed-release",
    ]


def test_approving_the_installed_release_approves_its_fab_hash(tmp_path: Path) -> None:
    state = tmp_path / "state"

    assert main(["site", "approve", "--installed-release", "--state-dir", str(state)]) == 0

    assert ApprovalStore(state).is_approved(release_hash())


@pytest.mark.usefixtures("task_identity")
def test_the_server_names_a_gate_refusal_as_a_decline_not_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    strategy, recorder, recorded = recording_strategy()
    model = ArrayRecord({"w": Array(np.zeros(3, dtype=np.float32))})
    list(strategy.configure_train(1, model, ConfigRecord({}), FakeGrid([5, 6])))
    refusals = [
        error_reply(node, f"ClientApp error: {keys.not_approved_reason(HASH_B, index)}")
        for index, node in enumerate((5, 6))
    ]

    with caplog.at_level(logging.WARNING, logger="medfed.server"):
        assert strategy.aggregate_train(1, refusals) == (None, None)
        list(strategy.configure_evaluate(1, model, ConfigRecord({}), FakeGrid([5, 6])))
        eval_refusals = [
            error_reply(node, f"ClientApp error: {keys.not_approved_reason(HASH_B, index)}")
            for index, node in enumerate((5, 6))
        ]
        assert strategy.aggregate_evaluate(1, eval_refusals) is None
    recorder.end_round(1, model)

    (record,) = recorded
    assert record.declined == {"hospital-a": "app not approved", "hospital-b": "app not approved"}
    assert record.failed == {} and record.train_sites == []
    # Regression: the evaluation refusals were named "node 5", "node 6" beside the declines
    assert sorted(record.eval_missed) == ["hospital-a", "hospital-b"]
    assert all(keys.NOT_APPROVED in why for why in record.eval_missed.values())
    assert f"hospital-a refused the app: {keys.NOT_APPROVED}: {HASH_B}" in caplog.text
    assert json.loads(json.dumps(record.to_json()))["declined"]["hospital-b"] == "app not approved"
