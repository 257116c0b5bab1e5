"""The coordinator's copies of what every site attested: ``<run-dir>/attestations/<site>.jsonl``.

A site sends the signed privacy-ledger record of each trained round with its reply
(``keys.ATTESTATION``, ``common.ledger``). ``AttestationStore.keep`` appends it, in the
ledger's own line format, to the site's file in the run directory, after checking that its
update digest is that of the update actually received (a mismatch is logged and the copy is
kept, marked by the log line). With these copies a data-protection officer can check a
site's ledger against what the coordinator received (``medfed privacy verify LEDGER
--public-key KEY --attestations FILE``): a record removed from the end of a ledger leaves a
valid, shorter chain that only these copies reveal. The server cannot check signatures: it
has no site's public key; verification is a separate step.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from common import keys
from common.ledger import record_from_wire, update_digest

LOG = logging.getLogger("medfed.server")
ATTESTATIONS_DIR = "attestations"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def attestation_file(run_dir: Path, site: str) -> Path:
    """Where the copies of ``site``'s records go."""
    return run_dir / ATTESTATIONS_DIR / f"{_UNSAFE.sub('_', site).strip('_') or 'site'}.jsonl"


@dataclass(frozen=True)
class AttestationStore:
    """Appends each site's attested ledger records to the run directory."""

    run_dir: Path

    def keep(self, site: str, content: RecordDict) -> None:
        """Keep the attestation in one train reply (a reply without one is left alone)."""
        attestation = content.get(keys.ATTESTATION)
        if not isinstance(attestation, ConfigRecord):
            return
        try:
            record = record_from_wire(dict(attestation))
        except ValueError as problem:
            LOG.warning("%s sent an unreadable privacy attestation: %s", site, problem)
            return
        arrays = content.get(keys.ARRAYS)
        if isinstance(arrays, ArrayRecord) and update_digest(arrays) != record.update_sha256:
            LOG.warning(
                "%s attested round %d with an update digest that is not the update received",
                site,
                record.round,
            )
        path = attestation_file(self.run_dir, site)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as copies:
            copies.write(record.to_line() + "\n")
