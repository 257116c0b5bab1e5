"""The signed, hash-chained privacy ledger: written by a site, checked by anyone with its
public key. Tampering (edit, removal, insertion, reordering) is detected and named."""

from __future__ import annotations

import json
import logging
import stat
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

import common.ledger as ledger_module
from client.budget import SitePrivacy
from client.privacy_state import (
    LEDGER_KEY_FILE,
    LEGACY_STATE_FILE,
    MIGRATED_SUFFIX,
    PrivacyLedgerStore,
)
from common import keys
from common.config import MedfedConfig
from common.errors import ConfigError
from common.ledger import (
    LEDGER_FILE,
    MIGRATED_ROUND,
    check_chain,
    check_epsilons,
    last_record,
    parse_lines,
    read_checked,
    read_ledger,
    record_from_wire,
    record_to_wire,
    update_digest,
)
from common.privacy import epsilon_of
from common.signing import load_public_key, public_key_path
from medfed.cli import main
from server.attestations import AttestationStore, attestation_file

ENTRY = (1.2, 0.05, 20)  # (noise multiplier, sample rate, steps) of every round here
DIGEST = "ab" * 32


def _site(state: Path, run_key: str = "run-1") -> SitePrivacy:
    privacy = MedfedConfig().replace(**{"privacy.accountant": "rdp"}).privacy
    return SitePrivacy(PrivacyLedgerStore(state), run_key, privacy, None)


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    """Five rounds of run-1 and one of run-2, as a site writes them."""
    state = tmp_path / "state"
    for server_round in range(1, 6):
        _site(state).record(server_round=server_round, entry=ENTRY, update_sha256=DIGEST)
    _site(state, "run-2").record(server_round=1, entry=ENTRY, update_sha256=DIGEST)
    return state / LEDGER_FILE


def _public(ledger: Path) -> Path:
    return public_key_path(ledger.parent / LEDGER_KEY_FILE)


def _verify(ledger: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = main(["privacy", "verify", str(ledger), "--public-key", str(_public(ledger)), *extra])
    captured = capsys.readouterr()
    return code, " ".join((captured.out + captured.err).split())


def _lines(ledger: Path) -> list[str]:
    return ledger.read_text().splitlines()


def _write(ledger: Path, lines: list[str]) -> None:
    ledger.write_text("".join(line + "\n" for line in lines))


def test_site_ledger_records_every_round_and_verifies(
    ledger: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = [r for r in read_ledger(ledger) if r is not None]
    key_file = ledger.parent / LEDGER_KEY_FILE

    code, out = _verify(ledger, capsys)

    assert code == 0 and "VALID: 6 record(s)" in out
    assert [(r.run_key, r.round) for r in records] == [("run-1", i) for i in range(1, 6)] + [
        ("run-2", 1)
    ]
    assert records[4].epsilon == pytest.approx(
        epsilon_of([(1.2, 0.05, 100)], delta=1e-5, accountant="rdp"), rel=1e-12
    )
    assert records[5].epsilon == pytest.approx(records[0].epsilon)  # a new run starts at 0
    assert all(r.update_sha256 == DIGEST for r in records)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert check_chain(read_ledger(ledger), load_public_key(_public(ledger))) == []


def test_edited_record_is_named(ledger: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = _lines(ledger)
    edited = json.loads(lines[2])
    edited["steps"] = 1  # claim less spend in round 3
    lines[2] = json.dumps(edited, sort_keys=True)
    _write(ledger, lines)

    code, out = _verify(ledger, capsys)

    assert code == 1
    assert "edited: line 3 (run run-1, round 3): the signature does not match" in out
    assert "removed" not in out and "inserted" not in out and "reordered" not in out


def test_removed_record_is_named(ledger: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = _lines(ledger)
    del lines[2]  # round 3
    _write(ledger, lines)

    code, out = _verify(ledger, capsys)

    assert code == 1
    assert "removed: record(s) removed before line 3 (run run-1, round 4)" in out
    # the later rounds' epsilon no longer follows from what the ledger still holds
    assert "epsilon: line 3 (run run-1, round 4) records epsilon" in out


def test_inserted_copy_is_named(ledger: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = _lines(ledger)
    lines.insert(3, lines[1])  # replay round 2 after round 3
    _write(ledger, lines)

    code, out = _verify(ledger, capsys)

    assert code == 1
    assert "inserted: line 4 (run run-1, round 2) was inserted" in out
    assert "edited" not in out


def test_inserted_forged_record_is_named(ledger: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = [r for r in read_ledger(ledger) if r is not None]
    forged = (
        records[1]
        .__class__(
            **{**records[1].__dict__, "round": 99, "prev_hash": records[1].hash, "signature": ""}
        )
        .signed(Ed25519PrivateKey.generate())
    )  # someone else's key
    lines = _lines(ledger)
    lines.insert(2, forged.to_line())
    _write(ledger, lines)

    code, out = _verify(ledger, capsys)

    assert code == 1
    assert "inserted: line 3 (run run-1, round 99) was inserted" in out
    assert "edited: line 3 (run run-1, round 99): the signature does not match" in out


def test_reordered_records_are_named(ledger: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = _lines(ledger)
    lines[1], lines[2] = lines[2], lines[1]  # rounds 3 and 2 swapped
    _write(ledger, lines)

    code, out = _verify(ledger, capsys)

    assert code == 1
    assert (
        "reordered: line 2 (run run-1, round 3) is out of order: it was written after "
        "line 3 (run run-1, round 2)" in out
    )
    assert "removed" not in out and "inserted" not in out and "edited" not in out


def test_wrong_epsilon_under_a_valid_signature_is_named(
    ledger: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a site that signs a record whose epsilon does not follow from its parameters
    site = _site(ledger.parent)
    records = [r for r in read_ledger(ledger) if r is not None]
    wrong = records[-1].__class__(**{**records[-1].__dict__, "round": 2, "epsilon": 0.01})
    site.store.append(wrong)

    code, out = _verify(ledger, capsys)

    assert code == 1
    assert "epsilon: line 7 (run run-1, round 2) records epsilon 0.01 but its parameters give" in (
        out.replace("run-2", "run-1")
    )


def test_removed_newest_record_is_found_in_the_coordinators_copies(
    ledger: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    store = AttestationStore(run_dir)
    for record in read_ledger(ledger):
        store.keep(
            "hospital-a", RecordDict({keys.ATTESTATION: ConfigRecord(record_to_wire(record))})
        )  # type: ignore[arg-type]
    copies = attestation_file(run_dir, "hospital-a")
    _write(ledger, _lines(ledger)[:-1])  # the newest record: a valid, shorter chain

    alone, _ = _verify(ledger, capsys)
    code, out = _verify(ledger, capsys, "--attestations", str(copies))

    assert alone == 0  # what no chain can show on its own ...
    assert code == 1  # ... the coordinator's copies do
    assert "removed: run run-2, round 1 (sent to the coordinator) is not in the ledger" in out


def test_unusable_input_exits_2(
    ledger: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_a_key = tmp_path / "key.pub"
    not_a_key.write_text("hello")

    missing = main(
        ["privacy", "verify", str(tmp_path / "none.jsonl"), "--public-key", str(_public(ledger))]
    )
    bad_key = main(["privacy", "verify", str(ledger), "--public-key", str(not_a_key)])

    assert missing == bad_key == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all(e.startswith("medfed: error:") for e in errors)


def test_private_key_file_also_verifies(ledger: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["privacy", "verify", str(ledger), "--public-key", str(ledger.parent / LEDGER_KEY_FILE)]
    )

    assert code == 0


def test_another_sites_key_fails_every_record_and_says_so(
    ledger: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = _site(tmp_path / "other")
    other.record(server_round=1, entry=ENTRY, update_sha256=DIGEST)
    other_key = _public(tmp_path / "other" / LEDGER_FILE)

    code = main(["privacy", "verify", str(ledger), "--public-key", str(other_key)])

    out = " ".join(capsys.readouterr().out.split())
    assert code == 1
    assert out.count("edited:") == 6 and "is it this site's ledger key?" in out


def test_a_site_refuses_to_train_on_a_tampered_ledger(ledger: Path) -> None:
    lines = _lines(ledger)
    del lines[0]
    _write(ledger, lines)

    with pytest.raises(ConfigError, match="fails its check") as excinfo:
        _site(ledger.parent).history()

    assert "removed before line 1" in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_legacy_state_is_migrated_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    history = [[1.1, 0.1, 30], [0.9, 0.1, 10]]
    legacy = {
        "version": 1,
        "runs": {
            "old-run": {
                "accountant": "rdp",
                "delta": 1e-5,
                "history": history,
                "calibration": {"rdp:x": 1.1},
            }
        },
    }
    (tmp_path / LEGACY_STATE_FILE).write_text(json.dumps(legacy))
    store = PrivacyLedgerStore(tmp_path)

    spend = store.load()["old-run"]

    assert spend.history == [tuple(e) for e in history]
    assert spend.epsilon == pytest.approx(epsilon_of(spend.history, delta=1e-5, accountant="rdp"))
    assert [r.round for r in store.records()] == [MIGRATED_ROUND, MIGRATED_ROUND]
    assert store.calibrations("old-run") == {"rdp:x": 1.1}
    assert not (tmp_path / LEGACY_STATE_FILE).exists()
    assert (tmp_path / (LEGACY_STATE_FILE + MIGRATED_SUFFIX)).exists()
    assert _verify(tmp_path / LEDGER_FILE, capsys)[0] == 0


def test_show_prints_spend_per_run_and_in_total(
    ledger: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["privacy", "show", "--state-dir", str(ledger.parent)])

    out = " ".join(capsys.readouterr().out.split())
    total = epsilon_of([(1.2, 0.05, 120)], delta=1e-5, accountant="rdp")
    assert code == 0
    assert "run-1" in out and "run-2" in out
    assert f"all 2 run(s) composed: ε = {total:.4f}" in out
    assert f"--public-key {_public(ledger)}" in out


def test_attestation_round_trips_the_wire(ledger: Path) -> None:
    record = read_ledger(ledger)[0]
    assert record is not None

    wire = record_to_wire(record)

    assert set(wire) == set(keys.ATTESTATION_ALLOWED)
    assert record_from_wire(dict(ConfigRecord(wire))) == record  # type: ignore[arg-type]
    assert check_epsilons([record]) == []


def test_update_digest_survives_flower_serialisation() -> None:
    from flwr.common.serde import array_record_from_proto, array_record_to_proto

    arrays = ArrayRecord({"w": Array(np.arange(6, dtype=np.float32).reshape(2, 3))})

    received = array_record_from_proto(array_record_to_proto(arrays))

    assert update_digest(received) == update_digest(arrays)
    changed = ArrayRecord({"w": Array(np.arange(6, dtype=np.float32).reshape(3, 2))})
    assert update_digest(changed) != update_digest(arrays)


def test_server_keeps_copies_and_flags_a_digest_mismatch(
    ledger: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    record = read_ledger(ledger)[0]
    assert record is not None
    arrays = ArrayRecord({"w": Array(np.zeros(3, dtype=np.float32))})
    reply = RecordDict(
        {keys.ARRAYS: arrays, keys.ATTESTATION: ConfigRecord(record_to_wire(record))}  # type: ignore[arg-type]
    )

    with caplog.at_level(logging.WARNING, logger="medfed.server"):
        AttestationStore(tmp_path).keep("hospital-a", reply)
        AttestationStore(tmp_path).keep("hospital-b", RecordDict({keys.ARRAYS: arrays}))

    copies = read_ledger(attestation_file(tmp_path, "hospital-a"))
    assert copies == [record]
    assert not attestation_file(tmp_path, "hospital-b").exists()
    assert "not the update received" in caplog.text


def _forged_after_last(ledger: Path) -> str:
    """A record chained to the ledger's last one but signed with someone else's key."""
    last = [r for r in read_ledger(ledger) if r is not None][-1]
    forged = replace(last, round=last.round + 1, prev_hash=last.hash, signature="")
    return forged.signed(Ed25519PrivateKey.generate()).to_line()


def _tamperings(ledger: Path) -> dict[str, list[str]]:
    lines = _lines(ledger)
    edited = json.loads(lines[1])
    edited["steps"] = 19  # the same length (20 -> 19): only the content changes
    return {
        "edited": [lines[0], json.dumps(edited, sort_keys=True), *lines[2:]],
        "removed": [*lines[:2], *lines[3:]],
        "reordered": [lines[0], lines[2], lines[1], *lines[3:]],
        "copy appended": [*lines, lines[1]],
        "forged appended": [*lines, _forged_after_last(ledger)],
        "garbage appended": [*lines, "not a record"],
        "shortened": lines[:-1],
    }


@pytest.mark.parametrize(
    "tampering",
    [
        "edited",
        "removed",
        "reordered",
        "copy appended",
        "forged appended",
        "garbage appended",
        "shortened",
    ],
)
def test_a_read_after_a_clean_read_finds_exactly_what_a_full_check_finds(
    ledger: Path, tampering: str
) -> None:
    """The incremental read (``read_checked`` with the last clean read) answers like
    ``check_chain`` on the whole file, whatever was done to it since."""
    key = load_public_key(_public(ledger))
    _, problems, known = read_checked(ledger, key)
    assert problems == [] and known is not None
    _write(ledger, _tamperings(ledger)[tampering])

    records, problems, _ = read_checked(ledger, key, known)

    assert problems == check_chain(read_ledger(ledger), key)
    assert records == read_ledger(ledger)
    if tampering != "shortened":  # a shorter chain is valid: the coordinator's copies find it
        assert problems


def test_a_site_checks_only_the_lines_appended_since_its_last_read(
    ledger: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A site reads its ledger several times a round; after the first clean read, each later
    read verifies only the new records' signatures, and still refuses a tampered ledger."""
    site = _site(ledger.parent)
    assert len(site.history()) == 1  # a clean read: 5 rounds of one (noise, rate) entry
    verified: list[bytes] = []
    real_valid = ledger_module.signature_valid

    def counting(key, signature: bytes, data: bytes) -> bool:  # type: ignore[no-untyped-def]
        verified.append(data)
        return real_valid(key, signature, data)

    monkeypatch.setattr(ledger_module, "signature_valid", counting)
    site.record(server_round=6, entry=ENTRY, update_sha256=DIGEST)
    before = len(verified)
    assert site.history() == [(ENTRY[0], ENTRY[1], ENTRY[2] * 6)]
    assert len(verified) - before == 1  # the appended round 6 only, not all 7 records

    lines = _lines(ledger)
    edited = json.loads(lines[0])
    edited["steps"] = 2  # claim less spend in round 1, after the site's clean reads
    _write(ledger, [json.dumps(edited, sort_keys=True), *lines[1:]])
    with pytest.raises(ConfigError, match="fails its check"):
        site.history()


@pytest.mark.parametrize("chunk", [7, 100, 1 << 16])
@pytest.mark.parametrize("after", ["nothing", "garbage lines", "no final newline", "non-UTF-8"])
def test_the_record_an_append_chains_to_is_the_last_record_of_a_full_read(
    ledger: Path, chunk: int, after: str
) -> None:
    """``append_record`` reads the ledger backwards for its last record; it must find the
    record a full parse finds, whatever follows it and wherever the chunks cut."""
    data = ledger.read_bytes()
    tail = {
        "nothing": b"",
        "garbage lines": b"\nnot json\n[1, 2]\n\n",
        "no final newline": b'{"half": "a record',
        "non-UTF-8": b"\xff\xfe\n",
    }[after]
    ledger.write_bytes(data + tail)
    expected = [r for r in parse_lines(data.decode().splitlines()) if r is not None][-1]

    assert last_record(ledger, chunk) == expected
    ledger.write_bytes(tail)
    assert last_record(ledger, chunk) is None
