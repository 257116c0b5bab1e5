"""A site's privacy ledger: signed, hash-chained records of what each round spent.

Each line of ``privacy-ledger.jsonl`` is one JSON record: the run key, the server round, the
Opacus accountant entry of the round (sample rate, noise multiplier, steps), the accountant
and delta, the run's epsilon after the round, the SHA-256 of the model update the site sent
(``update_digest``), the hash of the previous record (``GENESIS`` for the first) and an
Ed25519 signature (``common.signing``) over the record's canonical form (sorted-key compact
JSON of every field but the signature). A record's hash is the SHA-256 of that same form.

Round 0 marks a record migrated from a pre-ledger ``privacy-state.json`` (one per history
entry; no update digest: ``NO_UPDATE``). A round number may appear more than once for a
run: a round redone after the run resumed from an earlier checkpoint is booked again
(``RunSpend.redone`` names it; every record's spend counts). Round -1 (``GENERATOR_ROUND``)
marks the DP-SGD training of a site's on-site generator (``client.augment``): its spend
composes with the run's rounds like any other entry, but it is not a round; its digest is
that of the generator's weights, which never leave the site (so the coordinator never holds a
copy of this record).

``check_chain`` names what was done to a ledger: an *edited* record (its signature no longer
matches), a *removed* one (a record points to a predecessor that is not there), an
*inserted* one (the chain skips it, or it copies an earlier record) and *reordered* ones
(a record points to one written later). ``check_epsilons`` recomputes every record's epsilon
with Opacus' accountant from the recorded parameters. Removing the newest records leaves a
valid, shorter chain: ``check_against`` finds them in the coordinator's copies
(``server.attestations``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from flwr.app import ArrayRecord

from common.errors import MedfedError
from common.privacy import HistoryEntry, epsilon_of, merge_history
from common.signing import signature_valid

LEDGER_FILE = "privacy-ledger.jsonl"
GENESIS = "0" * 64
NO_UPDATE = "0" * 64
MIGRATED_ROUND = 0
GENERATOR_ROUND = -1  # an on-site generator's training (client.augment), not a round
VERSION = 1
LEDGER_MODE = 0o600  # like the site's other state: readable by the site's account only
EPSILON_REL_TOL = 1e-6


class LedgerError(MedfedError):
    """A ledger file cannot be read at all."""


@dataclass(frozen=True)
class LedgerRecord:
    """One round's spend at a site, as signed."""

    run_key: str
    round: int
    sample_rate: float
    noise_multiplier: float
    steps: int
    accountant: str
    epsilon: float  # the run's epsilon at this site after this round
    delta: float
    update_sha256: str  # hex; NO_UPDATE for a migrated record
    prev_hash: str  # hex; GENESIS for the first record
    recorded_at: int  # Unix seconds
    signature: str = ""  # hex Ed25519 signature of ``body()``

    def body(self) -> bytes:
        """The canonical bytes that are signed and hashed (everything but the signature)."""
        content = {**asdict(self), "version": VERSION}
        del content["signature"]
        return json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()

    @property
    def hash(self) -> str:
        """SHA-256 (hex) of :meth:`body`: what the next record's ``prev_hash`` holds."""
        return hashlib.sha256(self.body()).hexdigest()

    def history_entry(self) -> HistoryEntry:
        """The Opacus accountant entry this round added."""
        return (self.noise_multiplier, self.sample_rate, self.steps)

    def signed(self, key: Ed25519PrivateKey) -> LedgerRecord:
        """This record with ``key``'s signature."""
        return replace(self, signature=key.sign(self.body()).hex())

    def signature_ok(self, key: Ed25519PublicKey) -> bool:
        """Whether the signature is ``key``'s signature of this content."""
        try:
            signature = bytes.fromhex(self.signature)
        except ValueError:
            return False
        return signature_valid(key, signature, self.body())

    def to_line(self) -> str:
        """One JSONL line (no newline)."""
        return json.dumps({**asdict(self), "version": VERSION}, sort_keys=True)

    def where(self) -> str:
        """``run X, round N`` (for messages)."""
        return f"run {self.run_key}, round {self.round}"

    @classmethod
    def from_json(cls, content: Mapping[str, object]) -> LedgerRecord:
        """Parse one decoded line; ``ValueError`` when it is not a ledger record."""
        if content.get("version") != VERSION:
            raise ValueError(f"unknown ledger version {content.get('version')!r}")
        values: dict[str, object] = {}
        for spec in fields(cls):
            value = content.get(spec.name)
            kind = {"str": str, "int": int, "float": float}[str(spec.type)]
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"field '{spec.name}' is missing or not a {kind.__name__}")
            values[spec.name] = value
        return cls(**values)  # type: ignore[arg-type]


def update_digest(arrays: ArrayRecord) -> str:
    """SHA-256 (hex) of a model update: every array's name, dtype, shape and bytes, by name.

    The server computes the same digest from the update it received.
    """
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = arrays[name]
        digest.update(f"{name}\0{array.dtype}\0{list(array.shape)}\0".encode())
        digest.update(array.data)
    return digest.hexdigest()


_HEX_FIELDS = ("update_sha256", "prev_hash", "signature")


def record_to_wire(record: LedgerRecord) -> dict[str, str | int | float | bytes]:
    """The record as the reply's ``attestation`` ConfigRecord (``keys.ATTESTATION_ALLOWED``)."""
    values = asdict(record)
    return {
        name.replace("_", "-"): bytes.fromhex(value) if name in _HEX_FIELDS else value
        for name, value in values.items()
    }


def record_from_wire(values: Mapping[str, object]) -> LedgerRecord:
    """Inverse of :func:`record_to_wire`; ``ValueError`` for anything else."""
    content: dict[str, object] = {"version": VERSION}
    for spec in fields(LedgerRecord):
        value = values.get(spec.name.replace("_", "-"))
        if spec.name in _HEX_FIELDS:
            if not isinstance(value, bytes):
                raise ValueError(f"attestation field '{spec.name}' is not bytes")
            value = value.hex()
        content[spec.name] = value
    return LedgerRecord.from_json(content)


def parse_lines(lines: Iterable[str]) -> list[LedgerRecord | None]:
    """Every line as a record (None: not a ledger record, a blank line included, so that
    line numbers in messages are the file's)."""
    records: list[LedgerRecord | None] = []
    for line in lines:
        try:
            content = json.loads(line)
            records.append(LedgerRecord.from_json(content) if isinstance(content, dict) else None)
        except ValueError:
            records.append(None)
    return records


def read_ledger(path: Path) -> list[LedgerRecord | None]:
    """The records of a ledger file (an absent file is an empty ledger)."""
    return parse_lines(_ledger_text(path, _ledger_bytes(path)).splitlines())


def _ledger_bytes(path: Path) -> bytes:
    if not path.exists():
        return b""
    try:
        return path.read_bytes()
    except OSError as problem:
        raise LedgerError(f"cannot read the privacy ledger {path}: {problem}") from None


def _ledger_text(path: Path, data: bytes) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError as problem:
        raise LedgerError(f"cannot read the privacy ledger {path}: {problem}") from None


@dataclass(frozen=True)
class CheckedLedger:
    """A ledger's bytes that passed ``check_chain``: their length, SHA-256 and records."""

    key: bytes  # the raw public key they were checked with
    size: int
    digest: str
    records: tuple[LedgerRecord, ...]


def read_checked(
    path: Path, key: Ed25519PublicKey, known: CheckedLedger | None = None
) -> tuple[list[LedgerRecord | None], list[Problem], CheckedLedger | None]:
    """The ledger's records, its problems (``check_chain``) and what to pass next time.

    A site reads its ledger several times a round, and the ledger only grows: with ``known``
    (the last clean read), a file that still starts with exactly the bytes checked then has
    only its appended lines checked, each signed with ``key`` and chained to the one before.
    Any other content (an earlier byte changed, the file shorter, another key, an appended
    line that fails) is checked in full, so the answer is always ``check_chain``'s.
    """
    data = _ledger_bytes(path)
    raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    if known is not None and known.key == raw and len(data) >= known.size:
        digest = hashlib.sha256(data[: known.size])
        if digest.hexdigest() == known.digest:
            appended = parse_lines(_ledger_text(path, data[known.size :]).splitlines())
            last = known.records[-1].hash if known.records else GENESIS
            for record in appended:
                if record is None or record.prev_hash != last or not record.signature_ok(key):
                    break
                last = record.hash
            else:
                records: list[LedgerRecord | None] = [*known.records, *appended]
                digest.update(data[known.size :])
                return records, [], _checked(raw, data, records, digest.hexdigest())
    records = parse_lines(_ledger_text(path, data).splitlines())
    problems = check_chain(records, key)
    if problems:
        return records, problems, None
    return records, [], _checked(raw, data, records, hashlib.sha256(data).hexdigest())


def _checked(
    key: bytes, data: bytes, records: Sequence[LedgerRecord | None], digest: str
) -> CheckedLedger | None:
    """What a clean read (no ``None`` among ``records``) leaves for the next one (None when
    the file ends mid-line)."""
    if data and not data.endswith(b"\n"):
        return None
    return CheckedLedger(key, len(data), digest, tuple(r for r in records if r is not None))


def last_record(path: Path, chunk: int = 1 << 16) -> LedgerRecord | None:
    """The last line of ``path`` that is a ledger record (None if there is none).

    Reads the file backwards a chunk at a time, so finding what the next record chains to
    costs the same for a ledger of ten records as for one of ten thousand.
    """
    if not path.exists():
        return None
    with open(path, "rb") as ledger:
        end = ledger.seek(0, os.SEEK_END)
        tail = b""
        while True:
            start = max(0, end - chunk)
            ledger.seek(start)
            tail = ledger.read(end - start) + tail
            end = start
            lines = tail.split(b"\n")
            # the first piece may be the end of a line that began before ``start``
            complete, tail = (lines, b"") if start == 0 else (lines[1:], lines[0])
            for line in reversed(complete):
                try:
                    found = parse_lines([line.decode()])[0]
                except UnicodeDecodeError:
                    found = None
                if found is not None:
                    return found
            if start == 0:
                return None


def append_record(path: Path, record: LedgerRecord, key: Ed25519PrivateKey) -> LedgerRecord:
    """Chain ``record`` to the last record in ``path``, sign it and append it (fsynced).

    Reading the last record and appending happen under an exclusive lock on the ledger file
    (``flock``), so two runs training at the site at once (two ClientApp processes) cannot
    both chain to the same predecessor: the second waits and chains to the first's record.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, LEDGER_MODE)
    with os.fdopen(fd, "a") as ledger:
        fcntl.flock(ledger.fileno(), fcntl.LOCK_EX)  # released when the file is closed
        last = last_record(path)
        chained = replace(record, prev_hash=last.hash if last is not None else GENESIS)
        chained = chained.signed(key)
        ledger.write(chained.to_line() + "\n")
        ledger.flush()
        os.fsync(ledger.fileno())
    return chained


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a ledger, named by line (1-based) and kind."""

    line: int
    kind: str  # edited | removed | inserted | reordered | epsilon
    message: str


@dataclass(frozen=True)
class RunSpend:
    """What one run spent at the site, folded from its ledger records."""

    run_key: str
    accountant: str
    delta: float
    history: list[HistoryEntry] = field(default_factory=list)
    epsilon: float = 0.0  # as recorded by the run's last record
    rounds: int = 0  # rounds trained, a redone round counted each time
    redone: list[int] = field(default_factory=list)  # rounds recorded more than once


def _label(records: Sequence[LedgerRecord | None], index: int) -> str:
    record = records[index]
    where = f" ({record.where()})" if record is not None else ""
    return f"line {index + 1}{where}"


def check_chain(records: Sequence[LedgerRecord | None], key: Ed25519PublicKey) -> list[Problem]:
    """Signatures and links of every record; each problem names its line and kind."""
    problems: list[Problem] = []
    hashes = [r.hash if r is not None else None for r in records]
    first_at: dict[str, int] = {}
    for index, digest in enumerate(hashes):
        if digest is not None:
            first_at.setdefault(digest, index)
    reorder_until = -1  # lines up to here belong to a reordering already reported
    previous_edited = False

    def report(index: int, kind: str, message: str) -> None:
        if not any(p.line == index + 1 and p.kind == kind for p in problems):
            problems.append(Problem(index + 1, kind, message))

    for index, record in enumerate(records):
        label = _label(records, index)
        if record is None:
            report(index, "edited", f"{label} is not a ledger record (edited or damaged)")
            previous_edited = True
            continue
        signed = record.signature_ok(key)
        if not signed:
            report(
                index,
                "edited",
                f"{label}: the signature does not match its content "
                "(edited, forged, or signed with another key)",
            )
        expected = hashes[index - 1] if index > 0 else GENESIS
        if record.prev_hash != expected:
            before_previous = hashes[index - 2] if index > 1 else GENESIS
            earlier_copy = first_at.get(hashes[index] or "", index) < index
            points_to = -1 if record.prev_hash == GENESIS else first_at.get(record.prev_hash)
            if index <= reorder_until and points_to is not None:
                reorder_until = max(reorder_until, points_to + 1)  # part of one reported
            elif index > 0 and record.prev_hash == before_previous:
                report(
                    index - 1,
                    "inserted",
                    f"{_label(records, index - 1)} was inserted: the chain goes from the "
                    f"record before it straight to line {index + 1}",
                )
            elif earlier_copy:
                copied = first_at[hashes[index] or ""]
                report(index, "inserted", f"{label} was inserted: a copy of line {copied + 1}")
            elif points_to is not None and points_to > index:
                report(
                    index,
                    "reordered",
                    f"{label} is out of order: it was written after {_label(records, points_to)}",
                )
                reorder_until = max(reorder_until, points_to + 1)
            elif points_to is not None:
                report(
                    index,
                    "reordered",
                    f"{label} is out of order: it was written right after "
                    f"{_label(records, points_to) if points_to >= 0 else 'the ledger start'}, "
                    f"not after line {index}",
                )
                reorder_until = index
            elif not previous_edited:
                report(
                    index,
                    "removed",
                    f"record(s) removed before {label}: the record it was chained to "
                    "is not in the ledger",
                )
        previous_edited = not signed
    return sorted(problems, key=lambda p: p.line)


def check_epsilons(
    records: Sequence[LedgerRecord | None],
    *,
    on_record: Callable[[], None] | None = None,
) -> list[Problem]:
    """Recompute each record's epsilon (Opacus) from the run's recorded entries so far."""
    problems: list[Problem] = []
    histories: dict[str, list[HistoryEntry]] = {}
    for index, record in enumerate(records):
        if on_record is not None:
            on_record()
        if record is None:
            continue
        history = merge_history(histories.get(record.run_key, []), [record.history_entry()])
        histories[record.run_key] = history
        try:
            recomputed = epsilon_of(history, delta=record.delta, accountant=record.accountant)
        except (ValueError, KeyError) as problem:
            problems.append(Problem(index + 1, "epsilon", f"{_label(records, index)}: {problem}"))
            continue
        if not math.isclose(recomputed, record.epsilon, rel_tol=EPSILON_REL_TOL, abs_tol=1e-9):
            problems.append(
                Problem(
                    index + 1,
                    "epsilon",
                    f"{_label(records, index)} records epsilon {record.epsilon:.6g} but its "
                    f"parameters give {recomputed:.6g}",
                )
            )
    return problems


def check_against(
    records: Sequence[LedgerRecord | None], attested: Sequence[LedgerRecord | None]
) -> list[Problem]:
    """Records the coordinator received (its attestation copies) that the ledger lacks."""
    present = {r.hash for r in records if r is not None}
    by_round = {(r.run_key, r.round): i for i, r in enumerate(records) if r is not None}
    problems: list[Problem] = []
    for copy in attested:
        if copy is None or copy.hash in present:
            continue
        index = by_round.get((copy.run_key, copy.round))
        if index is not None:
            problems.append(
                Problem(
                    index + 1,
                    "edited",
                    f"{_label(records, index)} differs from the copy the coordinator received",
                )
            )
        else:
            problems.append(
                Problem(
                    len(records) + 1,
                    "removed",
                    f"{copy.where()} (sent to the coordinator) is not in the ledger: removed",
                )
            )
    return problems


def run_spends(records: Iterable[LedgerRecord | None]) -> dict[str, RunSpend]:
    """Each run's folded history, in ledger order (unreadable lines skipped).

    A round number recorded again for a run is a *redone* round, not tampering: the run was
    resumed from a checkpoint older than a round the site had already trained and sent
    (the coordinator lost it). Both spends are real and both count in the run's epsilon.
    """
    runs: dict[str, RunSpend] = {}
    seen: dict[str, set[int]] = {}
    for record in records:
        if record is None:
            continue
        before = runs.get(record.run_key) or RunSpend(
            record.run_key, record.accountant, record.delta
        )
        counted = record.round > MIGRATED_ROUND  # not migrated, not a generator
        again = counted and record.round in seen.setdefault(record.run_key, set())
        if counted:
            seen[record.run_key].add(record.round)
        runs[record.run_key] = replace(
            before,
            history=merge_history(before.history, [record.history_entry()]),
            epsilon=record.epsilon,
            rounds=before.rounds + counted,
            redone=[*before.redone, record.round] if again else before.redone,
        )
    return runs
