"""A site's privacy accountant state on disk, so epsilon survives rounds and restarts.

The state lives in the site's *state directory*, never in a run directory the server sees:
node-config ``state-dir`` if the hospital sets one, else ``~/.cache/medfed/privacy/<site-id>``
for a real site folder, or ``<synthetic-root>/.privacy/<site-id>`` for a simulated synthetic
hospital (so simulations and tests never write into the home directory). The server cannot
move it: a new location would forget what was spent.

``privacy-state.json`` holds, per run (Flower's run id), the Opacus accountant history
``[(noise_multiplier, sample_rate, steps), ...]`` with the accountant's name and delta, and
the noise multipliers calibrated for that run (Opacus' search is slow; the answer is fixed
for a run, so later rounds and restarts reuse it). A
restarted SuperNode in the same run continues from it; the site's lifetime spend is the
composition of all runs in the file. Writes are atomic (temporary file + rename).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from common import keys
from common.config import MedfedConfig
from common.errors import ConfigError
from common.files import atomic_write
from common.privacy import HistoryEntry

STATE_FILE = "privacy-state.json"
DEFAULT_STATE_ROOT = "~/.cache/medfed/privacy"
_VERSION = 1


def state_dir_for(node_config: Mapping[str, object], config: MedfedConfig, site_id: str) -> Path:
    """The site's state directory (see the module docstring for the defaults)."""
    configured = node_config.get(keys.NODE_STATE_DIR)
    if configured:
        return Path(str(configured)).expanduser()
    if node_config.get(keys.NODE_DATA_PATH):
        return Path(DEFAULT_STATE_ROOT).expanduser() / site_id
    return Path(config.data.synthetic_root).expanduser() / ".privacy" / site_id


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
class RunSpend:
    """What one run has spent at this site."""

    accountant: str
    delta: float
    history: list[HistoryEntry]
    calibration: dict[str, float] = field(default_factory=dict)  # inputs -> noise multiplier


@dataclass(frozen=True)
class PrivacyStateStore:
    """Reads and atomically rewrites ``<state-dir>/privacy-state.json``."""

    directory: Path

    @property
    def path(self) -> Path:
        return self.directory / STATE_FILE

    def load(self) -> dict[str, RunSpend]:
        """Every run's spend, keyed by run id (empty if nothing was spent yet)."""
        if not self.path.exists():
            return {}
        try:
            payload = json.loads(self.path.read_text())
            return {
                run: RunSpend(
                    accountant=str(entry["accountant"]),
                    delta=float(entry["delta"]),
                    history=[(float(n), float(q), int(s)) for n, q, s in entry["history"]],
                    calibration={str(k): float(v) for k, v in entry.get("calibration", {}).items()},
                )
                for run, entry in payload["runs"].items()
            }
        except (OSError, ValueError, KeyError, TypeError) as problem:
            # Never train on a state we cannot read: that would forget spent privacy.
            raise ConfigError(
                f"cannot read the privacy state {self.path} ({problem}); "
                "fix or restore it before this site trains again"
            ) from None

    def run(self, run_key: str) -> RunSpend | None:
        """What one run has spent (None for a new run)."""
        return self.load().get(run_key)

    def other_runs(self, run_key: str) -> list[list[HistoryEntry]]:
        """The histories of every other run recorded at this site."""
        return [spend.history for run, spend in self.load().items() if run != run_key]

    def record(self, run_key: str, spend: RunSpend) -> None:
        """Replace one run's history (atomic rewrite of the whole file)."""
        runs = self.load()
        runs[run_key] = spend
        payload = {
            "version": _VERSION,
            "updated": dt.datetime.now().isoformat(timespec="seconds"),
            "runs": {
                run: {
                    "accountant": s.accountant,
                    "delta": s.delta,
                    "history": [list(e) for e in s.history],
                    "calibration": s.calibration,
                }
                for run, s in runs.items()
            },
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps(payload, indent=2).encode())
