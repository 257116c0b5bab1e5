"""Checkpoints: atomic round trip, pruning, damaged files, and the resume compatibility check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from common.config import MedfedConfig
from common.errors import ConfigError
from server.checkpoint import (
    CHECKPOINT_DIR,
    Checkpoint,
    check_compatible,
    config_hash,
    extended_rounds,
    load_latest,
    read_checkpoint,
    save_checkpoint,
)
from server.lifecycle import RunLifecycle, check_resume
from server.report_data import load_run
from server.rundir import METRICS_FILE, RunDirectory


def _checkpoint(server_round: int) -> Checkpoint:
    rng = np.random.default_rng(server_round)
    return Checkpoint(
        round=server_round,
        arrays={
            "features.0.weight": rng.normal(size=(4, 1, 3, 3)).astype(np.float32),
            "classifier.bias": rng.normal(size=2).astype(np.float32),
        },
        config_hash="abc",
        strategy_state={"m_t/classifier.bias": rng.normal(size=2)},
        metrics=[
            {"round": r, "auc": 0.5 + r / 10, "train_sites": ["hospital-a"]}
            for r in range(1, server_round + 1)
        ],
    )


def test_checkpoint_retention_keeps_every_round_by_default_or_the_newest_n(
    tmp_path: Path,
) -> None:
    for server_round in (1, 2, 3):
        save_checkpoint(tmp_path / "all", _checkpoint(server_round))
        save_checkpoint(tmp_path / "two", _checkpoint(server_round), keep=2)
    kept = {
        name: sorted(p.name for p in (tmp_path / name / CHECKPOINT_DIR).iterdir())
        for name in ("all", "two")
    }
    # no temporary files left behind
    assert kept["all"] == ["round-0001.npz", "round-0002.npz", "round-0003.npz"]
    assert kept["two"] == ["round-0002.npz", "round-0003.npz"]


def test_checkpoint_round_trip_is_exact(tmp_path: Path) -> None:
    for server_round in (1, 2, 3):
        save_checkpoint(tmp_path, _checkpoint(server_round))
    loaded = load_latest(tmp_path)
    expected = _checkpoint(3)
    assert loaded is not None and loaded.round == 3 and loaded.config_hash == "abc"
    assert list(loaded.arrays) == list(expected.arrays)
    for name, value in expected.arrays.items():
        assert loaded.arrays[name].dtype == value.dtype
        np.testing.assert_array_equal(loaded.arrays[name], value)
    np.testing.assert_array_equal(
        loaded.strategy_state["m_t/classifier.bias"], expected.strategy_state["m_t/classifier.bias"]
    )
    assert loaded.metrics == expected.metrics
    assert list(loaded.array_record().keys()) == list(expected.arrays)


def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, _checkpoint(1))
    newest = save_checkpoint(tmp_path, _checkpoint(2))
    newest.write_bytes(newest.read_bytes()[:100])  # torn write
    with pytest.raises(ConfigError, match="cannot be read"):
        read_checkpoint(newest)
    loaded = load_latest(tmp_path)
    assert loaded is not None and loaded.round == 1
    assert load_latest(tmp_path / "elsewhere") is None


def test_resume_compatibility_ignores_bookkeeping_but_not_settings() -> None:
    original = MedfedConfig().replace(**{"run.name": "a", "run.run-dir": "/x"})
    stored = original.to_flat()
    moved = original.replace(
        **{"run.name": "b", "run.run-dir": "/y", "run.resume": True, "federation.round-timeout": 5}
    )
    check_compatible(stored, moved)
    assert config_hash(original) == config_hash(moved)
    changed = original.replace(**{"strategy.name": "fedadam", "run.seed": 7})
    with pytest.raises(ConfigError, match=r"settings differ .*run.seed \(0 -> 7\), strategy.name"):
        check_compatible(stored, changed)
    assert config_hash(original) != config_hash(changed)


def _open(config: MedfedConfig) -> tuple[RunDirectory, Checkpoint | None]:
    lifecycle = RunLifecycle(config, Console(quiet=True))
    return lifecycle.run_dir, lifecycle.checkpoint


def test_the_lifecycle_resumes_from_the_checkpoint_and_refuses_other_settings(
    tmp_path: Path,
) -> None:
    config = MedfedConfig().replace(**{"run.run-dir": str(tmp_path / "run")})
    run_dir, checkpoint = _open(config)
    assert checkpoint is None
    done = _checkpoint(2)
    done.config_hash = config_hash(config)
    save_checkpoint(run_dir.path, done)
    run_dir.append_metrics({"round": 1})
    run_dir.append_metrics({"round": 2})
    run_dir.append_metrics({"round": 3, "partial": True})  # written after the last checkpoint
    with pytest.raises(ConfigError, match="already holds a run with checkpoints"):
        _open(config)
    resumed = config.replace(**{"run.resume": True})
    reopened, checkpoint = _open(resumed)
    assert reopened.path == run_dir.path and checkpoint is not None and checkpoint.round == 2
    assert [line["round"] for line in reopened.read_metrics()] == [1, 2]
    assert (reopened.path / METRICS_FILE).read_text().count("\n") == 2
    with pytest.raises(
        ConfigError, match=r"cannot resume: settings differ .*privacy.target-epsilon"
    ):
        check_resume(resumed.replace(**{"privacy.target-epsilon": 2.0}))
    with pytest.raises(ConfigError, match=r"'run\.resume' = True: needs run\.run-dir"):
        check_resume(MedfedConfig().replace(**{"run.resume": True}))
    with pytest.raises(ConfigError, match="is not a medfed run directory"):
        RunDirectory.open_existing(tmp_path)


def test_a_run_without_dp_can_be_extended_but_not_shortened(tmp_path: Path) -> None:
    config = MedfedConfig().replace(
        **{
            "run.run-dir": str(tmp_path / "run"),
            "federation.num-rounds": 4,
            "privacy.enabled": False,
        }
    )
    run_dir, _ = _open(config)
    done = _checkpoint(4)
    done.config_hash = config_hash(config)
    save_checkpoint(run_dir.path, done)
    resumed = config.replace(**{"run.resume": True})
    with pytest.raises(ConfigError, match=r"'federation.num-rounds' = 3: .*not shortened"):
        check_resume(resumed.replace(**{"federation.num-rounds": 3}))
    cosine = MedfedConfig.from_flat(
        {
            **run_dir.stored_config(),
            "strategy.name": "fedavgm",
            "strategy.server-lr-schedule": "cosine",
        }
    )
    with pytest.raises(ConfigError, match=r"'federation.num-rounds' = 6: .*server-lr-schedule"):
        extended_rounds(cosine.to_flat(), cosine.replace(**{"federation.num-rounds": 6}))
    assert extended_rounds(run_dir.stored_config(), resumed) is None
    longer = resumed.replace(**{"federation.num-rounds": 6})
    reopened, checkpoint = _open(longer)
    assert checkpoint is not None and checkpoint.round == 4
    assert reopened.stored_config()["federation.num-rounds"] == 6  # the report's planned count
    assert reopened.planned_rounds_before() == [4]
    # killed before round 5 was checkpointed: the round-4 checkpoint (planned 4) still resumes
    assert check_resume(longer) is not None
    # and the other settings are still checked against the original run's
    with pytest.raises(ConfigError, match=r"settings differ .*run.seed"):
        check_resume(longer.replace(**{"run.seed": 3}))


def test_a_dp_run_cannot_be_extended(tmp_path: Path) -> None:
    config = MedfedConfig().replace(
        **{"run.run-dir": str(tmp_path / "run"), "federation.num-rounds": 4}
    )
    run_dir, _ = _open(config)
    done = _checkpoint(4)
    done.config_hash = config_hash(config)
    save_checkpoint(run_dir.path, done)
    longer = config.replace(**{"run.resume": True, "federation.num-rounds": 8})
    with pytest.raises(
        ConfigError,
        match=r"'federation.num-rounds' = 8: the sites calibrated their DP noise .* over the "
        r"planned 4 rounds",
    ):
        check_resume(longer)
    assert "extended" not in (run_dir.path / "config.json").read_text()


def test_a_moved_run_directory_records_its_new_place_when_resumed(tmp_path: Path) -> None:
    """Regression: the settings kept the old ``run.run-dir``, so the report of a run resumed
    after its directory was moved named the place it no longer was."""
    config = MedfedConfig().replace(
        **{"run.run-dir": str(tmp_path / "old"), "federation.num-rounds": 4}
    )
    run_dir, _ = _open(config)
    done = _checkpoint(2)
    done.config_hash = config_hash(config)
    save_checkpoint(run_dir.path, done)
    moved = tmp_path / "new"
    shutil.move(run_dir.path, moved)

    resumed = config.replace(
        **{"run.run-dir": str(moved), "run.resume": True, "federation.round-timeout": 30}
    )
    reopened, checkpoint = _open(resumed)
    assert checkpoint is not None and checkpoint.round == 2
    settings = load_run(moved).config
    assert settings["run.run-dir"] == str(moved.resolve())
    assert settings["federation.round-timeout"] == 30
    assert settings["run.resume"] is False  # the stored settings are those of a run's start
    assert reopened.planned_rounds_before() == []  # moved, not extended
    history = json.loads((moved / "config.json").read_text())["resumed"]
    assert history[-1]["changed"]["run.run-dir"] == [
        str((tmp_path / "old").resolve()),
        str(moved.resolve()),
    ]
    _open(resumed)  # resumed again from the same place: nothing more to record
    assert len(json.loads((moved / "config.json").read_text())["resumed"]) == 1
