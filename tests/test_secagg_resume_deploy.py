"""A deployed SecAgg+ run survives its coordinator: kill -9 the SuperLink, restart, resume.

Two hospitals (SuperNode + gate each, TLS + node auth, loopback only) and a SuperLink run a
3-round SecAgg+ federation. Once round 1 is checkpointed the SuperLink is killed with
``kill -9`` while round 2 trains, started again on the same ``--database``, and the run is
resumed the documented way (``run.resume=true run.run-dir=…``). The resumed run must finish
its 3 rounds under SecAgg+ with the same run key (the sites' ε continues, within target).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from common.data.synthetic import generate_site
from medfed.testing.federation import Hospital, LocalFederation, online_nodes, wait_until
from medfed.testing.timing import scaled
from server.rundir import METRICS_FILE, REPORT_FILE
from tests.deploy_support import REPO_ROOT

pytestmark = pytest.mark.slow

SUPERLINK_PORT = 19150
NODE_PORTS = (19151, 19152)
SITES = ("hospital-a", "hospital-b")
ROUNDS = 3
ROUND_TIMEOUT_S = 180.0  # scaled like every wait here


def _metrics(run_dir: Path) -> list[dict[str, object]]:
    path = run_dir / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _run_dir(runs_dir: Path, rounds: int) -> Path | None:
    found = sorted(runs_dir.glob("*-secagg-resume"))
    return found[0] if found and len(_metrics(found[0])) >= rounds else None


def test_a_secagg_run_resumes_after_the_superlink_is_killed(tmp_path: Path) -> None:
    # Arrange: two hospitals, SecAgg+ on (fedavg, no per-update validation), DP on
    hospitals = [
        Hospital(
            site,
            generate_site(tmp_path / "data" / site, i, seed=0, num_images=24, image_size=64),
        )
        for i, site in enumerate(SITES)
    ]
    runs_dir = tmp_path / "runs"
    config = {
        "federation.num-rounds": ROUNDS,
        "federation.num-sites": len(SITES),
        "federation.min-sites": 2,
        "federation.round-timeout": scaled(ROUND_TIMEOUT_S),
        "secagg.enabled": True,
        "validation.enabled": False,
        "data.image-size": 32,
        "run.runs-dir": str(runs_dir),
        "run.name": "secagg-resume",
    }
    with LocalFederation(
        tmp_path / "federation", hospitals, SUPERLINK_PORT, NODE_PORTS, approved_apps=[REPO_ROOT]
    ) as federation:
        first = federation.start_run("flwr-run-first", REPO_ROOT, config)
        wait_until(
            lambda: _run_dir(runs_dir, 1) is not None or first.process.poll() is not None,
            scaled(2 * ROUND_TIMEOUT_S),
            "round 1 of the SecAgg+ run",
        )
        run_dir = _run_dir(runs_dir, 1)
        assert run_dir is not None, first.tail(60)

        # Act: the coordinator dies during round 2, comes back on the same database, resumes
        time.sleep(1.0)  # round 2 under way (its outcome does not matter: it is redone)
        federation.kill_superlink()
        federation.processes.stop(first)
        done_before = len(_metrics(run_dir))
        federation.start_superlink()
        wait_until(
            lambda: online_nodes(federation.env) == len(SITES),
            scaled(ROUND_TIMEOUT_S),
            "the hospitals to reconnect to the restarted SuperLink",
        )
        resumed = federation.start_run(
            "flwr-run-resume",
            REPO_ROOT,
            {**config, "run.resume": True, "run.run-dir": str(run_dir)},
        )
        resumed.process.wait(timeout=scaled(5 * ROUND_TIMEOUT_S))
        output = resumed.output()

    # Assert: all rounds, under SecAgg+, each site within its budget, the resume on record
    assert resumed.process.returncode == 0, output[-4000:]
    assert f"Resuming {run_dir.name} after round {done_before}/{ROUNDS}" in output, output[-3000:]
    rounds = _metrics(run_dir)
    assert [r["round"] for r in rounds] == list(range(1, ROUNDS + 1))
    assert all(sorted(r["train_sites"]) == list(SITES) for r in rounds[done_before:])
    final_epsilon = rounds[-1]["epsilon"]
    assert isinstance(final_epsilon, dict) and set(final_epsilon) == set(SITES)
    assert all(0 < eps <= 8.0 for eps in final_epsilon.values()), final_epsilon
    report = (run_dir / REPORT_FILE).read_text()
    assert "SecAgg+" in report and "resumed" in report
