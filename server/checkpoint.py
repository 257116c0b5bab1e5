"""Checkpoints: what a run needs to continue after its last completed round.

After every round the server writes ``checkpoints/round-NNNN.npz`` atomically (temporary
file, fsync, rename): global parameters, the strategy's optimiser state (FedAdam / FedYogi
moments, FedAvgM momentum), the round number, a hash of the settings that shape the result,
and every round's metrics so far. ``run.keep-checkpoints`` says how many are kept: 0 (the
default) keeps every round's, N > 0 the N newest (a checkpoint of the small default model is
tens of kB; a ResNet-18's about 45 MB, where a limit is worth setting). ``load_latest`` returns the
newest readable one; ``check_compatible`` refuses to resume under different settings.

One setting may grow on a resume: ``federation.num-rounds`` (``extended_rounds``), to train a
run that was still improving for more rounds. Only where the rounds already run do not depend
on the planned count: not under DP (each site calibrated its noise to spend its epsilon over
the planned rounds) and not with a server learning-rate schedule that decays over them.

Settings that do not change the computation (where runs are written, the name, the round
timeout and sampling wait, checkpoint retention, simulation parallelism, the resume flag
itself) are left out of the hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord

from common.config import MedfedConfig, Scalar
from common.errors import ConfigError

CHECKPOINT_DIR = "checkpoints"
KEEP_ALL = 0
NOT_HASHED = frozenset(
    {
        "run.name",
        "run.runs-dir",
        "run.run-dir",
        "run.resume",
        "federation.round-timeout",
        "federation.wait-timeout",
        "run.keep-checkpoints",
        "simulation.max-parallel",
    }
)
_META = "__meta__"
_ARRAYS = "arrays/"
_STATE = "state/"


def hashed_settings(config: MedfedConfig | dict[str, Scalar]) -> dict[str, Scalar]:
    """The settings a resumed run must share with the original (sorted, flat)."""
    flat = config.to_flat() if isinstance(config, MedfedConfig) else dict(config)
    return {key: flat[key] for key in sorted(flat) if key not in NOT_HASHED}


def config_hash(config: MedfedConfig | dict[str, Scalar]) -> str:
    """SHA-256 over :func:`hashed_settings`."""
    text = json.dumps(hashed_settings(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def check_compatible(stored: dict[str, Scalar], config: MedfedConfig) -> None:
    """Raise ``ConfigError`` naming the settings that differ from the stored run's."""
    before, now = hashed_settings(stored), hashed_settings(config)
    differing = sorted(key for key in before.keys() | now.keys() if before.get(key) != now.get(key))
    if differing:
        shown = ", ".join(
            f"{key} ({before.get(key, '<unset>')!r} -> {now.get(key, '<unset>')!r})"
            for key in differing[:4]
        )
        more = f" and {len(differing) - 4} more" if len(differing) > 4 else ""
        raise ConfigError(f"cannot resume: settings differ from the original run: {shown}{more}")


ROUNDS_KEY = "federation.num-rounds"


def extended_rounds(stored: dict[str, Scalar], config: MedfedConfig) -> int | None:
    """The planned round count ``config`` extends (``None``: the same count as ``stored``).

    ``ConfigError`` naming the key when the run may not be extended or would be shortened.
    """
    planned = int(stored.get(ROUNDS_KEY, config.federation.num_rounds))  # type: ignore[arg-type]
    wanted = config.federation.num_rounds
    if wanted == planned:
        return None
    prefix = f"cannot resume with config key '{ROUNDS_KEY}' = {wanted}"
    if wanted < planned:
        raise ConfigError(
            f"{prefix}: the run was planned for {planned} rounds; a run can be extended, "
            "not shortened (stop it instead)"
        )
    if config.privacy.enabled:
        raise ConfigError(
            f"{prefix}: the sites calibrated their DP noise to spend privacy.target-epsilon "
            f"over the planned {planned} rounds; start a new run to train longer"
        )
    schedules = {
        "strategy.server-lr-schedule": config.strategy.server_lr_schedule,
        "train.lr-schedule": config.train.lr_schedule,
    }
    for key, schedule in schedules.items():
        if schedule != "constant":
            raise ConfigError(
                f"{prefix}: {key} = '{schedule}' decays over the planned {planned} rounds"
            )
    return planned


@dataclass
class Checkpoint:
    """The state of a run after ``round`` completed rounds."""

    round: int
    arrays: dict[str, np.ndarray]
    config_hash: str
    strategy_state: dict[str, np.ndarray] = field(default_factory=dict)
    metrics: list[dict[str, object]] = field(default_factory=list)

    def array_record(self) -> ArrayRecord:
        """The global parameters as a Flower ``ArrayRecord`` (original key order)."""
        return ArrayRecord({name: Array(value) for name, value in self.arrays.items()})


def _path(directory: Path, server_round: int) -> Path:
    return directory / f"round-{server_round:04d}.npz"


def save_checkpoint(run_dir: Path, checkpoint: Checkpoint, keep: int = KEEP_ALL) -> Path:
    """Atomically write ``checkpoint`` under ``run_dir/checkpoints``; keep the ``keep``
    newest (``KEEP_ALL``: every one)."""
    directory = run_dir / CHECKPOINT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    meta = {
        "round": checkpoint.round,
        "config_hash": checkpoint.config_hash,
        "array_order": list(checkpoint.arrays),
        "metrics": checkpoint.metrics,
    }
    payload = {_META: np.array(json.dumps(meta))}
    payload.update({_ARRAYS + name: value for name, value in checkpoint.arrays.items()})
    payload.update({_STATE + name: value for name, value in checkpoint.strategy_state.items()})
    target = _path(directory, checkpoint.round)
    tmp = directory / f".{target.name}.tmp"
    with open(tmp, "wb") as handle:
        np.savez(handle, **payload)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, target)
    _fsync_dir(directory)
    if keep > 0:
        for old in sorted(directory.glob("round-*.npz"))[:-keep]:
            old.unlink(missing_ok=True)
    return target


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_checkpoint(path: Path) -> Checkpoint:
    """Read one checkpoint file (``ConfigError`` if it is damaged)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data[_META]))
            arrays = {name: data[_ARRAYS + name] for name in meta["array_order"]}
            state = {
                key.removeprefix(_STATE): data[key] for key in data.files if key.startswith(_STATE)
            }
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as problem:
        raise ConfigError(f"checkpoint {path} cannot be read: {problem}") from None
    return Checkpoint(
        round=int(meta["round"]),
        arrays=arrays,
        config_hash=str(meta["config_hash"]),
        strategy_state=state,
        metrics=list(meta["metrics"]),
    )


def load_latest(run_dir: Path) -> Checkpoint | None:
    """The newest readable checkpoint of a run, or ``None`` when there is none."""
    for path in sorted((run_dir / CHECKPOINT_DIR).glob("round-*.npz"), reverse=True):
        try:
            return read_checkpoint(path)
        except ConfigError:
            continue
    return None
