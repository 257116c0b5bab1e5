"""A site's privacy state on disk: its signed ledger, so epsilon survives rounds and restarts.

The state lives in the site's *state directory*, never in a run directory the server sees:
node-config ``state-dir`` if the hospital sets one, else ``~/.cache/medfed/privacy/<site-id>``
for a real site folder, or ``<synthetic-root>/.privacy/<site-id>`` for a simulated synthetic
hospital (so simulations and tests never write into the home directory). The server cannot
move it: a new location would forget what was spent.

``privacy-ledger.jsonl`` (``common.ledger``) *is* the privacy state: one signed,
hash-chained record per trained round, keyed by run (the run key the server sends). A
run's accountant history is folded from its records; the site's lifetime spend is the
composition of every run in the ledger. The ledger is checked (chain and signatures) every
time it is read (after a clean read, only the lines appended since, as long as every earlier
byte is unchanged: ``common.ledger.read_checked``), and a site refuses to train on a ledger
that fails the check.

A state directory is one site's (``claim_state_dir``): the first site to use it writes its
site id into ``<state-dir>/site-id``, and another site's SuperNode pointed at it is refused.

The signing key is node-config ``ledger-key`` (``medfed certs add-site`` writes one next to
the node key). A site without one (simulation, tests, the demo) gets
``<state-dir>/ledger-key.pem`` (0600, with ``ledger-key.pem.pub``) on first use.

Two runs may train at one site at the same time (two ClientApp processes). Each round's
budget check, training and ledger record happen under the site's round lock
(``one_round_at_a_time``: an exclusive ``flock`` on ``<state-dir>/.round.lock``, released
by the kernel if the process dies), so both runs' spends count against the site's lifetime
budget: neither can check the budget before the other's round is booked.

The noise multipliers calibrated for a run (Opacus' search is slow; the answer is fixed for
a run) are a cache, not spend: they live beside the ledger in ``privacy-calibration.json``.

A state directory from before the ledger (``privacy-state.json``) is migrated once: every
history entry becomes a signed round-0 record (no update digest), its calibrations move to
the calibration file, and the old file is renamed ``privacy-state.json.migrated``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common import keys
from common.config import MedfedConfig
from common.errors import ConfigError
from common.files import atomic_write
from common.ledger import (
    GENESIS,
    LEDGER_FILE,
    MIGRATED_ROUND,
    NO_UPDATE,
    CheckedLedger,
    LedgerRecord,
    RunSpend,
    append_record,
    read_checked,
    run_spends,
)
from common.privacy import HistoryEntry, epsilon_of, merge_history
from common.signing import load_or_create_signing_key, load_signing_key, public_key_path

LOG = logging.getLogger("medfed.client")
LEGACY_STATE_FILE = "privacy-state.json"
MIGRATED_SUFFIX = ".migrated"
CALIBRATION_FILE = "privacy-calibration.json"
LEDGER_KEY_FILE = "ledger-key.pem"
DEFAULT_STATE_ROOT = "~/.cache/medfed/privacy"
ROUND_LOCK_FILE = ".round.lock"
SITE_STAMP_FILE = "site-id"
# The last clean read of each ledger this process opened (``common.ledger.read_checked``):
# a site reads its ledger several times a round, and a later read checks only what was
# appended since. A simulation plays many sites in one process: keep the most recent few.
CHECKED_LEDGERS_KEPT = 16
_CHECKED: OrderedDict[Path, CheckedLedger] = OrderedDict()
_CHECKED_LOCK = threading.Lock()


@contextmanager
def one_round_at_a_time(directory: Path) -> Iterator[None]:
    """Hold the site's round lock (blocking until another run's round at the site is done)."""
    directory.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(directory / ROUND_LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def state_dir_for(node_config: Mapping[str, object], config: MedfedConfig, site_id: str) -> Path:
    """The site's state directory (see the module docstring for the defaults)."""
    configured = node_config.get(keys.NODE_STATE_DIR)
    if configured:
        return Path(str(configured)).expanduser()
    if node_config.get(keys.NODE_DATA_PATH):
        return Path(DEFAULT_STATE_ROOT).expanduser() / site_id
    return Path(config.data.synthetic_root).expanduser() / ".privacy" / site_id


def claim_state_dir(directory: Path, site_id: str) -> None:
    """Stamp ``directory`` as ``site_id``'s state directory, or refuse another site's.

    Two SuperNodes given one ``state-dir`` would book their rounds into one ledger under one
    run key: each would see the other's rounds as its own redone ones and re-plan its noise
    every round. The first site to use a state directory writes its site id into
    ``<state-dir>/site-id`` (atomically: a link that fails if the file exists); any other
    site is refused with ``ConfigError`` before it reads the ledger. The same site at a new
    data path (same ``site-id`` or folder name) is still the same site.
    """
    stamp = directory / SITE_STAMP_FILE
    if not stamp.exists():
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        draft = directory / f".{SITE_STAMP_FILE}.{os.getpid()}.{threading.get_ident()}"
        draft.write_text(site_id + "\n")
        try:
            os.link(draft, stamp)
        except FileExistsError:
            pass  # another process of a site stamped it first: compare below
        finally:
            draft.unlink()
    try:
        owner = stamp.read_text().strip()
    except (OSError, UnicodeDecodeError) as problem:
        raise ConfigError(
            f"cannot read {stamp} (which site owns this state directory): {problem}"
        ) from None
    if owner != site_id:
        raise ConfigError(
            f"the state directory {directory} belongs to site '{owner}', not '{site_id}': "
            "give each SuperNode its own node config 'state-dir' (its privacy ledger is "
            "that site's alone)"
        )


def ledger_key_of(node_config: Mapping[str, object]) -> Path | None:
    """The signing key the node config names (``ledger-key``), if it names one."""
    configured = node_config.get(keys.NODE_LEDGER_KEY)
    return Path(str(configured)).expanduser() if configured else None


def site_budget_of(node_config: Mapping[str, object]) -> float | None:
    """The site's own lifetime epsilon budget (node-config ``epsilon-budget``), if set."""
    value = node_config.get(keys.NODE_EPSILON_BUDGET)
    if value is None or value == "":
        return None
    try:
        budget = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"node config 'epsilon-budget' must be a number, got {value!r}") from None
    if budget <= 0:
        raise ConfigError(f"node config 'epsilon-budget' must be > 0, got {budget}")
    return budget


@dataclass(frozen=True)
class PrivacyLedgerStore:
    """Reads (checked) and appends to ``<state-dir>/privacy-ledger.jsonl``."""

    directory: Path
    configured_key: Path | None = None  # node-config ``ledger-key``; None: one in directory

    @property
    def path(self) -> Path:
        return self.directory / LEDGER_FILE

    @property
    def key_path(self) -> Path:
        return self.configured_key or self.directory / LEDGER_KEY_FILE

    def signing_key(self) -> Ed25519PrivateKey:
        """The site's ledger key; created in the state directory if none is configured."""
        if self.configured_key is not None:
            return load_signing_key(self.configured_key)
        key, created = load_or_create_signing_key(self.key_path)
        if created:
            LOG.info(
                "created this site's ledger signing key %s (its public half %s verifies "
                "the ledger: medfed privacy verify)",
                self.key_path,
                public_key_path(self.key_path),
            )
        return key

    def records(self) -> list[LedgerRecord]:
        """Every record, after checking chain and signatures (``ConfigError`` if broken)."""
        self._migrate_legacy()
        if not self.path.exists():
            return []
        where = self.path.resolve()
        with _CHECKED_LOCK:
            known = _CHECKED.pop(where, None)
        records, problems, checked = read_checked(self.path, self.signing_key().public_key(), known)
        if checked is not None:
            with _CHECKED_LOCK:
                _CHECKED[where] = checked
                while len(_CHECKED) > CHECKED_LEDGERS_KEPT:
                    _CHECKED.popitem(last=False)
        if problems:
            # Never train on a ledger we cannot trust: that could forget spent privacy.
            raise ConfigError(
                f"the privacy ledger {self.path} fails its check ({problems[0].message}; "
                f"{len(problems)} problem(s) in all: medfed privacy verify shows them); "
                "restore it before this site trains again"
            )
        return [r for r in records if r is not None]

    def load(self) -> dict[str, RunSpend]:
        """Every run's spend, keyed by run key (empty if nothing was spent yet)."""
        return run_spends(self.records())

    def run(self, run_key: str) -> RunSpend | None:
        """What one run has spent (None for a new run)."""
        return self.load().get(run_key)

    def other_runs(self, run_key: str) -> list[list[HistoryEntry]]:
        """The histories of every other run recorded at this site."""
        return [spend.history for run, spend in self.load().items() if run != run_key]

    def append(self, record: LedgerRecord) -> LedgerRecord:
        """Chain, sign and append one round's record (after checking the ledger)."""
        self.records()
        return append_record(self.path, record, self.signing_key())

    # -- the calibration cache (not spend) --------------------------------------------------
    @property
    def calibration_path(self) -> Path:
        return self.directory / CALIBRATION_FILE

    def calibrations(self, run_key: str) -> dict[str, float]:
        """Two runs may train at one site at the same time (two ClientApp processes). Each round's
        budget check, training and ledger record happen under the site's round lock
        (``one_round_at_a_time``: an exclusive ``flock`` on ``<state-dir>/.round.lock``, released
        by the kernel if the process dies), so both runs' spends count against the site's lifetime
        budget: neither can check the budget before the other's round is booked.

        The noise multipliers calibrated for a run (inputs -> multiplier)."""
        return self._all_calibrations().get(run_key, {})

    def remember_calibration(self, run_key: str, inputs: str, noise: float) -> None:
        """Keep one calibrated noise multiplier for the run (atomic rewrite)."""
        everything = self._all_calibrations()
        everything.setdefault(run_key, {})[inputs] = noise
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write(self.calibration_path, json.dumps(everything, indent=2).encode())

    def _all_calibrations(self) -> dict[str, dict[str, float]]:
        if not self.calibration_path.exists():
            return {}
        try:
            payload = json.loads(self.calibration_path.read_text())
            return {
                str(run): {str(k): float(v) for k, v in entries.items()}
                for run, entries in payload.items()
            }
        except (OSError, ValueError, AttributeError, TypeError):
            LOG.warning("ignoring the unreadable calibration cache %s", self.calibration_path)
            return {}

    # -- migration from privacy-state.json ------------------------------------------------
    def _migrate_legacy(self) -> None:
        legacy = self.directory / LEGACY_STATE_FILE
        if not legacy.exists():
            return
        if self.path.exists():
            raise ConfigError(
                f"{legacy} and {self.path} both exist: the old state was not migrated "
                f"completely; move {legacy.name} away once the ledger is verified"
            )
        try:
            runs = json.loads(legacy.read_text())["runs"]
            entries = {
                str(run): (
                    str(spend["accountant"]),
                    float(spend["delta"]),
                    [(float(n), float(q), int(s)) for n, q, s in spend["history"]],
                    {str(k): float(v) for k, v in spend.get("calibration", {}).items()},
                )
                for run, spend in runs.items()
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as problem:
            raise ConfigError(
                f"cannot read the privacy state {legacy} ({problem}) to migrate it into "
                f"{LEDGER_FILE}; fix or restore it before this site trains again"
            ) from None
        key = self.signing_key()
        now = int(time.time())
        for run, (accountant, delta, history, calibration) in entries.items():
            so_far: list[HistoryEntry] = []
            for noise, rate, steps in history:
                so_far = merge_history(so_far, [(noise, rate, steps)])
                record = LedgerRecord(
                    run_key=run,
                    round=MIGRATED_ROUND,
                    sample_rate=rate,
                    noise_multiplier=noise,
                    steps=steps,
                    accountant=accountant,
                    epsilon=epsilon_of(so_far, delta=delta, accountant=accountant),
                    delta=delta,
                    update_sha256=NO_UPDATE,
                    prev_hash=GENESIS,
                    recorded_at=now,
                )
                append_record(self.path, record, key)
            for inputs, noise in calibration.items():
                self.remember_calibration(run, inputs, noise)
        legacy.rename(legacy.with_name(legacy.name + MIGRATED_SUFFIX))
        LOG.warning("migrated %s into the signed privacy ledger %s", legacy, self.path)
