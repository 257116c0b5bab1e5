"""The run directory: what a federated run leaves behind, written so a crash loses nothing.

``config.json`` at the start; after every round one line appended to ``metrics.jsonl``
(flushed and fsynced) and ``model.pt`` replaced atomically; ``report.html`` at the end.

``config.json`` also holds the run's *key*: the directory's name plus a random suffix, made
once when the run starts and read back on a resume. Sites book their privacy spend under it,
so a new run never inherits the spend of an older one whose directory had the same name
(``run.run-dir = runs/seed-0`` used twice), while a resumed run keeps its own.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import flwr
import torch
from flwr.app import ArrayRecord

from common.config import MedfedConfig, Scalar
from common.errors import ConfigError
from common.model_file import MODEL_FILE, model_payload
from server.checkpoint import ROUNDS_KEY

RESUME_KEY = "run.resume"  # the stored settings keep the start's value
RUN_DIR_KEY = "run.run-dir"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
REPORT_FILE = "report.html"
NODE_SITES_FILE = "node-sites.json"  # node id -> site name, to name lost sites after a resume
EVENTS_FILE = "run-events.jsonl"  # the run's own events: resumed, stopped (one JSON per line)


def new_run_dir(runs_dir: Path, name: str) -> Path:
    """A fresh ``runs/<timestamp>-<name>/`` path (not yet created)."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    candidate = runs_dir / f"{stamp}-{name}"
    suffix = 1
    while candidate.exists():
        suffix += 1
        candidate = runs_dir / f"{stamp}-{name}-{suffix}"
    return candidate


@dataclass(frozen=True)
class RunDirectory:
    """Writer for one run's directory."""

    path: Path

    @classmethod
    def create(cls, config: MedfedConfig) -> RunDirectory:
        """Create the directory named by the config (or a fresh timestamped one)."""
        run = config.run
        path = Path(run.run_dir) if run.run_dir else new_run_dir(Path(run.runs_dir), run.name)
        path.mkdir(parents=True, exist_ok=True)
        directory = cls(path.resolve())
        directory.write_json(
            CONFIG_FILE,
            {
                "config": {**config.to_flat(), RUN_DIR_KEY: str(directory.path)},
                "run_key": f"{directory.path.name}-{secrets.token_hex(4)}",
                "created": dt.datetime.now().isoformat(timespec="seconds"),
                "flwr_version": flwr.__version__,
                "torch_version": torch.__version__,
            },
        )
        return directory

    @classmethod
    def open_existing(cls, path: Path | str) -> RunDirectory:
        """An existing run directory (to resume it); ``ConfigError`` if it is not one."""
        directory = cls(Path(path).expanduser().resolve())
        if not (directory.path / CONFIG_FILE).is_file():
            raise ConfigError(f"{directory.path} is not a medfed run directory (no {CONFIG_FILE})")
        return directory

    def _config_file(self) -> dict[str, object]:
        """``config.json`` as written (``ConfigError`` if it cannot be read)."""
        try:
            return dict(json.loads((self.path / CONFIG_FILE).read_text()))
        except (OSError, ValueError, TypeError) as problem:
            raise ConfigError(f"{self.path / CONFIG_FILE} cannot be read: {problem}") from None

    def run_key(self) -> str:
        """The run's key in each site's privacy state (its directory's name for a run
        directory written before keys had a random suffix)."""
        return str(self._config_file().get("run_key") or self.path.name)

    def stored_config(self) -> dict[str, Scalar]:
        """The flat settings the run was started with (its planned rounds as extended)."""
        stored = self._config_file()
        if not isinstance(stored.get("config"), dict):
            raise ConfigError(f"{self.path / CONFIG_FILE} cannot be read: no settings in it")
        return dict(stored["config"])  # type: ignore[arg-type]

    def planned_rounds_before(self) -> list[int]:
        """The planned round counts of the run before each extension (oldest first)."""
        steps = self._config_file().get("extended", [])
        return [int(step["from"]) for step in steps]  # type: ignore[union-attr]

    def record_resume(self, config: MedfedConfig) -> int | None:
        """Store the settings a resume runs with where they differ from the stored ones (the
        directory's new place after a move, a longer planned round count, a new timeout), each
        change kept under ``"resumed"``; return the planned round count an extension replaces
        (``None``: not extended)."""
        stored = self._config_file()
        settings: dict[str, Scalar] = stored["config"]  # type: ignore[assignment]
        resumed = {
            **config.to_flat(),
            RESUME_KEY: settings.get(RESUME_KEY, False),
            RUN_DIR_KEY: str(self.path),
        }
        changed = {key: value for key, value in resumed.items() if settings.get(key) != value}
        if not changed:
            return None
        now = dt.datetime.now().isoformat(timespec="seconds")
        before = int(settings[ROUNDS_KEY])  # type: ignore[arg-type]
        history: list[dict[str, object]] = stored.setdefault("resumed", [])  # type: ignore[assignment]
        history.append(
            {"at": now, "changed": {key: [settings.get(key), changed[key]] for key in changed}}
        )
        settings.update(changed)
        extended_from = before if ROUNDS_KEY in changed else None
        if extended_from is not None:
            extended: list[dict[str, object]] = stored.setdefault("extended", [])  # type: ignore[assignment]
            extended.append({"from": before, "to": settings[ROUNDS_KEY], "at": now})
        self.write_json(CONFIG_FILE, stored)
        return extended_from

    def rewrite_metrics(self, lines: list[dict[str, object]]) -> None:
        """Atomically replace ``metrics.jsonl`` (used when resuming from a checkpoint)."""
        self._atomic_write(
            METRICS_FILE, "".join(json.dumps(line) + "\n" for line in lines).encode()
        )

    def write_json(self, name: str, payload: object) -> None:
        """Atomically write a JSON file inside the run directory."""
        self._atomic_write(name, json.dumps(payload, indent=2).encode())

    def append_metrics(self, line: dict[str, object]) -> None:
        """Append one JSON line to ``metrics.jsonl`` and make it durable."""
        with open(self.path / METRICS_FILE, "a") as handle:
            handle.write(json.dumps(line) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def read_node_sites(self) -> dict[int, str]:
        """The node id -> site name map saved by :meth:`write_node_sites` (empty if none)."""
        try:
            saved = json.loads((self.path / NODE_SITES_FILE).read_text())
            return {int(node): str(site) for node, site in dict(saved).items()}
        except (OSError, ValueError, TypeError):
            return {}

    def write_node_sites(self, node_sites: dict[int, str]) -> None:
        """Save which node id answered as which site (atomically)."""
        self.write_json(NODE_SITES_FILE, {str(node): site for node, site in node_sites.items()})

    def append_event(self, after_round: int, kind: str, detail: str) -> None:
        """Record a run event (``resumed`` / ``stopped``) after ``after_round`` rounds."""
        line = {"after_round": after_round, "kind": kind, "detail": detail, "at": int(time.time())}
        with open(self.path / EVENTS_FILE, "a") as handle:
            handle.write(json.dumps(line) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def read_metrics(self) -> list[dict[str, object]]:
        """All round records written so far."""
        file = self.path / METRICS_FILE
        if not file.exists():
            return []
        return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]

    def save_model(
        self,
        arrays: ArrayRecord,
        config: MedfedConfig,
        server_round: int,
        threshold: float | None = None,
    ) -> None:
        """Atomically replace ``model.pt`` with the current global model, its preprocessing
        settings and operating threshold (format: ``common.model_file``).

        ``threshold``: the operating threshold chosen on validation (binary; None = arg-max).
        """
        payload = model_payload(arrays.to_torch_state_dict(), config, server_round, threshold)
        tmp = self.path / f".{MODEL_FILE}.tmp"
        torch.save(payload, tmp)
        os.replace(tmp, self.path / MODEL_FILE)

    def _atomic_write(self, name: str, data: bytes) -> None:
        tmp = self.path / f".{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, self.path / name)
