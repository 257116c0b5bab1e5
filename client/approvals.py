"""The apps a hospital has approved to run next to its patient images.

A Flower app arrives at a SuperNode as a FAB (Flower App Bundle); its identity is the FAB's
SHA-256 (Flower's FAB hash). The site keeps an allow-list of approved hashes in its state
directory (``approved-apps.json``, written atomically, mode 0600) and an append-only audit
trail (``approvals.log``: one line per change with the time, the operating-system user and
the hash). ``client.gate`` consults the list before any of an app's code is installed or
imported; FABs it was asked to run are kept under ``apps/`` for review (never executed).
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from common.errors import ConfigError, MedfedError
from common.files import atomic_write

APPROVALS_FILE = "approved-apps.json"
AUDIT_FILE = "approvals.log"
SEEN_APPS_DIR = "apps"  # FABs the gate was asked to run, kept for review: <hash>.fab
_HASH = re.compile(r"^[0-9a-f]{64}$")


def check_hash(value: str) -> str:
    """A FAB hash in canonical form (64 lower-case hex digits), else ``ConfigError``."""
    candidate = value.strip().lower()
    if not _HASH.match(candidate):
        raise ConfigError(f"'{value}' is not a FAB hash (64 hexadecimal digits, SHA-256)")
    return candidate


@dataclass(frozen=True)
class Approval:
    """One approved app."""

    fab_hash: str
    approved_at: str
    approved_by: str
    note: str = ""


@dataclass(frozen=True)
class ApprovalStore:
    """The allow-list and audit trail in one site's state directory."""

    state_dir: Path

    @property
    def path(self) -> Path:
        return self.state_dir / APPROVALS_FILE

    def approvals(self) -> dict[str, Approval]:
        """Every approved app by hash (empty when nothing was approved yet)."""
        if not self.path.exists():
            return {}
        try:
            payload = json.loads(self.path.read_text())
            return {
                fab_hash: Approval(fab_hash, **entry)
                for fab_hash, entry in payload["approved"].items()
            }
        except (OSError, ValueError, KeyError, TypeError) as problem:
            # Never guess: an unreadable list approves nothing and says why.
            raise ConfigError(f"cannot read the approvals in {self.path} ({problem})") from None

    def is_approved(self, fab_hash: str | None) -> bool:
        """Whether this FAB hash may run at the site (read from disk every time)."""
        return bool(fab_hash) and fab_hash in self.approvals()

    def approve(self, fab_hash: str, note: str = "") -> Approval:
        """Add a hash to the allow-list (idempotent) and audit the change."""
        fab_hash = check_hash(fab_hash)
        approvals = self.approvals()
        approval = approvals.get(fab_hash) or Approval(
            fab_hash, _now(), getpass.getuser(), note.strip()
        )
        approvals[fab_hash] = approval
        self._write(approvals)
        self._audit("approve", fab_hash, note)
        return approval

    def revoke(self, fab_hash: str) -> bool:
        """Remove a hash from the allow-list; False when it was not on it."""
        fab_hash = check_hash(fab_hash)
        approvals = self.approvals()
        if approvals.pop(fab_hash, None) is None:
            return False
        self._write(approvals)
        self._audit("revoke", fab_hash, "")
        return True

    def keep_seen_app(self, fab_hash: str, content: bytes) -> Path:
        """Store a FAB the site was asked to run (for ``medfed site review``); never run it."""
        fab_hash = check_hash(fab_hash)
        directory = self.state_dir / SEEN_APPS_DIR
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        target = directory / f"{fab_hash}.fab"
        if not target.exists():
            atomic_write(target, content)
        return target

    def _write(self, approvals: dict[str, Approval]) -> None:
        payload = {
            "version": 1,
            "approved": {
                fab_hash: {
                    "approved_at": a.approved_at,
                    "approved_by": a.approved_by,
                    "note": a.note,
                }
                for fab_hash, a in sorted(approvals.items())
            },
        }
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(self.path, (json.dumps(payload, indent=2) + "\n").encode())

    def _audit(self, action: str, fab_hash: str, note: str) -> None:
        line = f"{_now()}\t{getpass.getuser()}\t{action}\t{fab_hash}\t{note.strip()}\n"
        fd = os.open(self.state_dir / AUDIT_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())


def installed_release_root() -> Path:
    """The folder of the medfed release installed here (the one holding ``client/``)."""
    return Path(__file__).resolve().parents[1]


def build_release_fab(root: Path) -> bytes:
    """The FAB ``flwr run`` builds from a project folder (Flower's own builder)."""
    if not (root / "pyproject.toml").is_file():
        raise MedfedError(
            f"cannot build the app of {root}: no pyproject.toml (not a source release)"
        )
    from flwr.cli.build import build_fab_from_disk  # slow import; only when needed

    try:
        return build_fab_from_disk(root)
    except Exception as problem:  # Flower's builder raises typer/click errors too
        message = " ".join(str(problem).split()) or type(problem).__name__
        raise MedfedError(f"cannot build the app of {root}: {message}") from None


def release_hash(root: Path | None = None) -> str:
    """The FAB hash of a project folder (default: the installed release), as ``flwr run``."""
    return hashlib.sha256(build_release_fab(root or installed_release_root())).hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
