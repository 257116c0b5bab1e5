"""Two runs training at one site at the same time: its ledger and state files stay whole.

Regression: ``append_record`` read the last record, then appended a record chained to it,
with nothing stopping another process from appending in between. Three simulations sharing
the simulated hospitals' state (``data.synthetic-root``) left ledgers whose check failed
("line 325 (run seed-2, round 47) was inserted"), after which those sites refused to train
in every later round of every run.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from common.files import atomic_write
from common.ledger import (
    GENESIS,
    NO_UPDATE,
    LedgerRecord,
    append_record,
    check_chain,
    read_ledger,
)

WRITERS = 4
APPENDS = 40


def _append_many(ledger: str, pem: bytes, writer: int) -> None:
    key = load_pem_private_key(pem, password=None)
    for round_number in range(1, APPENDS + 1):
        record = LedgerRecord(
            run_key=f"run-{writer}",
            round=round_number,
            sample_rate=0.5,
            noise_multiplier=3.0,
            steps=1,
            accountant="rdp",
            epsilon=0.1 * round_number,
            delta=1e-5,
            update_sha256=NO_UPDATE,
            prev_hash=GENESIS,
            recorded_at=0,
        )
        append_record(Path(ledger), record, key)  # type: ignore[arg-type]


def test_concurrent_writers_keep_one_unbroken_chain(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    ledger = tmp_path / "privacy-ledger.jsonl"
    context = multiprocessing.get_context("spawn")
    writers = [
        context.Process(target=_append_many, args=(str(ledger), pem, writer))
        for writer in range(WRITERS)
    ]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=120)
        assert process.exitcode == 0
    records = read_ledger(ledger)
    assert len(records) == WRITERS * APPENDS
    assert check_chain(records, key.public_key()) == []
    for writer in range(WRITERS):  # every writer's rounds, in its own order
        rounds = [r.round for r in records if r is not None and r.run_key == f"run-{writer}"]
        assert rounds == list(range(1, APPENDS + 1))


def _write_many(target: str, writer: int, start: object) -> None:
    start.wait()  # type: ignore[attr-defined]  # every writer begins at once
    for count in range(300):
        atomic_write(Path(target), f"writer {writer} write {count}\n".encode() * 100)


def test_concurrent_atomic_writes_of_one_file_all_succeed(tmp_path: Path) -> None:
    """Regression: the temporary file had a fixed name, so when two runs at one site cached a
    calibration at once, one rename found its file already renamed by the other
    (FileNotFoundError: the site failed round 1)."""
    target = tmp_path / "privacy-calibration.json"
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(4)
    writers = [
        context.Process(target=_write_many, args=(str(target), writer, start))
        for writer in range(4)
    ]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=120)
        assert process.exitcode == 0
    lines = set(target.read_text().splitlines())
    assert len(lines) == 1 and next(iter(lines)).startswith("writer ")  # one whole write
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temporary file left
    assert (target.stat().st_mode & 0o777) == 0o600
