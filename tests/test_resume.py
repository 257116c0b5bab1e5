"""Kill a simulated run after round 2 of 4, resume it, and get the uninterrupted result.

Everything that shapes the result is seeded: the initial model (``run.seed``), each site's
local training (``(seed, site, round)``, one torch thread), the partition, and aggregation
order (replies are aggregated in site order). With every site sampled each round the
resumed run reproduces the uninterrupted one bit for bit; the test asserts exact equality.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from common.model_file import load_saved_model
from medfed.testing.timing import scaled
from server.checkpoint import CHECKPOINT_DIR, load_latest
from tests._fed_helpers import PNEUMONIA

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
SCENARIO = f"""
name = "resume-check"
description = "3 small hospitals, FedAdam + server EMA, DP-SGD, 4 rounds"
[federation]
num-sites = 3
num-rounds = 4
min-sites = 2
[strategy]
name = "fedadam"
server-lr = 0.05
ema-decay = 0.5
[partition]
pool = "{PNEUMONIA}"
kind = "dirichlet"
alpha = 1.0
max-images = 240
min-size = 30
[data]
image-size = 28
[train]
batch-size = 32
[privacy]
enabled = true
target-epsilon = 8.0
accountant = "rdp"
"""


def _medfed(*args: str, runs: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "FLWR_HOME": str(runs / ".flwr"),
        "RAY_TMPDIR": "/tmp",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "medfed", "simulate", *args, "--runs-dir", str(runs)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: Ray's processes included
    )


def _finish(process: subprocess.Popen, timeout: float = 300) -> str:
    output, _ = process.communicate(timeout=scaled(timeout))
    assert process.returncode == 0, output
    return output


def _run_dir(runs: Path) -> Path:
    (found,) = [p for p in runs.iterdir() if p.is_dir() and p.name.endswith("resume-check")]
    return found


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the run's whole process group, then any of its session left (by pid)."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=scaled(30))
    deadline = time.monotonic() + scaled(20)
    while time.monotonic() < deadline:
        listing = subprocess.run(
            ["ps", "-o", "pid=", "-s", str(process.pid)], capture_output=True, text=True
        ).stdout.split()
        if not listing:
            return
        for pid in listing:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.5)


def test_killed_run_resumes_to_the_same_final_parameters(tmp_path: Path) -> None:
    scenario = tmp_path / "resume-check.toml"
    scenario.write_text(SCENARIO)
    # Uninterrupted reference run
    reference_runs = tmp_path / "reference"
    _finish(_medfed(str(scenario), runs=reference_runs))
    reference = load_latest(_run_dir(reference_runs))
    assert reference is not None and reference.round == 4

    # Interrupted run: kill -9 once round 2 is checkpointed
    runs = tmp_path / "interrupted"
    process = _medfed(str(scenario), runs=runs)
    deadline = time.monotonic() + scaled(300)
    while time.monotonic() < deadline:
        if runs.exists() and any(runs.glob(f"*/{CHECKPOINT_DIR}/round-0002.npz")):
            break
        assert process.poll() is None, process.communicate()[0]
        time.sleep(0.05)
    _kill_group(process)
    run_dir = _run_dir(runs)
    killed_at = load_latest(run_dir)
    assert killed_at is not None and 2 <= killed_at.round < 4

    # An incompatible resume is refused, one line, before anything runs
    refused = _medfed("--resume", str(run_dir), "--set", "strategy.name=fedavg", runs=runs)
    output, _ = refused.communicate(timeout=scaled(120))
    assert refused.returncode == 2
    assert (
        output.strip()
        .splitlines()[-1]
        .startswith(
            "medfed: error: cannot resume: settings differ from the original run: strategy.name"
        )
    )

    # A DP run cannot be extended: its sites' noise was calibrated for the planned rounds
    longer = _medfed("--resume", str(run_dir), "--rounds", "6", runs=runs)
    output, _ = longer.communicate(timeout=scaled(120))
    assert longer.returncode == 2
    assert "'federation.num-rounds' = 6: the sites calibrated their DP noise" in output

    # Resume and compare
    output = _finish(_medfed("--resume", str(run_dir), runs=runs))
    assert f"Resuming {run_dir.name} after round {killed_at.round}/4" in output
    resumed = load_latest(run_dir)
    assert resumed is not None and resumed.round == 4
    for name, value in reference.arrays.items():
        np.testing.assert_array_equal(resumed.arrays[name], value, err_msg=name)
    for key, value in reference.strategy_state.items():
        np.testing.assert_array_equal(resumed.strategy_state[key], value, err_msg=key)
    # The served model (strategy.ema-decay) is the moving average, carried across the resume
    served = load_saved_model(run_dir).state_dict
    averaged = {k[len("ema/") :]: v for k, v in resumed.strategy_state.items() if k[:4] == "ema/"}
    assert set(averaged) == set(resumed.arrays)
    for name, value in averaged.items():
        np.testing.assert_array_equal(served[name].numpy(), value, err_msg=name)
    assert any(not np.array_equal(averaged[n], resumed.arrays[n]) for n in averaged)
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["round"] for line in lines] == [1, 2, 3, 4]
    # The run's clock goes on from the last checkpointed round: it does not restart at 0
    elapsed = [line["elapsed_s"] for line in lines]
    assert elapsed == sorted(elapsed) and elapsed[killed_at.round] > elapsed[killed_at.round - 1]
    assert [m["loss"] for m in lines] == [m["loss"] for m in reference.metrics]
    # The sites' privacy state continues across the resume: epsilon is not restarted.
    assert [m["epsilon"] for m in lines] == [m["epsilon"] for m in reference.metrics]


def test_a_finished_run_without_dp_extended_equals_the_longer_run(tmp_path: Path) -> None:
    """``medfed simulate --resume RUN --rounds 4`` on a finished 2-round run gives, bit for
    bit, what a 4-round run gives: nothing in the rounds run depends on the planned count."""
    scenario = tmp_path / "resume-check.toml"
    scenario.write_text(SCENARIO.replace("enabled = true", "enabled = false"))
    reference_runs = tmp_path / "reference"
    _finish(_medfed(str(scenario), runs=reference_runs))
    reference = load_latest(_run_dir(reference_runs))
    assert reference is not None and reference.round == 4

    runs = tmp_path / "extended"
    _finish(_medfed(str(scenario), "--rounds", "2", runs=runs))
    run_dir = _run_dir(runs)
    output = _finish(_medfed("--resume", str(run_dir), "--rounds", "4", runs=runs))
    assert f"Resuming {run_dir.name} after round 2/4 (extended from 2 planned rounds)" in output
    extended = load_latest(run_dir)
    assert extended is not None and extended.round == 4
    for name, value in reference.arrays.items():
        np.testing.assert_array_equal(extended.arrays[name], value, err_msg=name)
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["loss"] for m in lines] == [m["loss"] for m in reference.metrics]
    stored = json.loads((run_dir / "config.json").read_text())
    assert stored["config"]["federation.num-rounds"] == 4
    assert [(step["from"], step["to"]) for step in stored["extended"]] == [(2, 4)]
