"""End to end through Flower's simulation engine: a hostile site and a failing site.

Small on purpose (a few hundred PneumoniaMNIST images, 28x28): each test starts Ray once.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from common.config import MedfedConfig
from medfed.testing.faults import corrupt_updates_mod, fail_site_mod
from server.rundir import METRICS_FILE
from simulations.runner import run_simulated_federation
from tests._fed_helpers import PNEUMONIA

pytestmark = pytest.mark.slow


def _config(tmp_path: Path, **overrides) -> MedfedConfig:
    base = {
        "partition.pool": str(PNEUMONIA),
        "partition.kind": "iid",
        "partition.max-images": 400,
        "partition.min-size": 20,
        "data.image-size": 28,
        "train.batch-size": 32,
        "run.runs-dir": str(tmp_path / "runs"),
        "run.name": "faults",
        # the simulated sites' privacy ledgers go here, never into the home directory
        "data.synthetic-root": str(tmp_path / "synthetic"),
        "run.seed": 1,
        "privacy.accountant": "rdp",  # PRV's noise search costs seconds per site and round
    }
    return MedfedConfig().replace(**{**base, **overrides})


def _rounds(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines()]


def test_bad_updates_from_one_of_five_sites_are_rejected_and_rounds_go_on(tmp_path: Path) -> None:
    # Prepare: hospital-c (site 2) sends a sign-flipped update (in round 1, where honest
    # updates from a fresh model agree), then NaN, a wrong shape, and x1000
    plan = {1: "flip", 2: "nan", 3: "shape", 4: "scale"}
    config = _config(
        tmp_path,
        **{
            "federation.num-sites": 5,
            "federation.num-rounds": 4,
            "federation.min-sites": 3,
            "privacy.enabled": False,
            # honest updates of small IID sites can be near-orthogonal later in training
            # (one measured at -0.05), so only a clearly opposed direction is refused
            "validation.min-cosine": -0.5,
        },
    )
    # Execute
    run_dir = run_simulated_federation(
        config, console=Console(file=io.StringIO()), client_mods=[corrupt_updates_mod(2, plan)]
    )
    # Assert
    rounds = _rounds(run_dir)
    assert [r["round"] for r in rounds] == [1, 2, 3, 4]
    expected = {
        1: "update direction disagrees",
        2: "non-finite values",
        3: "has shape",
        4: "exceeds 10 x the round's median",
    }
    for record in rounds:
        assert list(record["rejected"]) == ["hospital-c"], record
        assert expected[record["round"]] in record["rejected"]["hospital-c"]
        assert record["train_sites"] == ["hospital-a", "hospital-b", "hospital-d", "hospital-e"]
        assert record["aggregated"] and record["failed"] == {}
    assert all(r["auc"] is not None for r in rounds)


def test_one_of_four_sites_failing_in_round_two_does_not_stop_the_run(tmp_path: Path) -> None:
    # Prepare: DP on, as in production; hospital-d (site 3) crashes in round 2
    config = _config(
        tmp_path,
        **{"federation.num-sites": 4, "federation.num-rounds": 2, "federation.min-sites": 2},
    )
    output = io.StringIO()
    # Execute
    run_dir = run_simulated_federation(
        config,
        console=Console(file=output, width=240),
        client_mods=[fail_site_mod(3, rounds={2})],
    )
    # Assert
    first, second = _rounds(run_dir)
    assert first["train_sites"] == ["hospital-a", "hospital-b", "hospital-c", "hospital-d"]
    assert second["train_sites"] == ["hospital-a", "hospital-b", "hospital-c"]
    assert list(second["failed"]) == ["hospital-d"]
    assert "simulated failure of site 3 in round 2" in second["failed"]["hospital-d"]
    assert second["eval_sites"] == ["hospital-a", "hospital-b", "hospital-c"]
    assert set(second["epsilon"]) == {"hospital-a", "hospital-b", "hospital-c"}
    text = output.getvalue()
    assert "round 2/2" in text and "sites 3 [hospital-a, hospital-b, hospital-c]" in text
    assert "failed [hospital-d]" in text
    assert (run_dir / "checkpoints" / "round-0002.npz").is_file()
    report = (run_dir / "report.html").read_text()
    participation = report[report.index('id="participation"') :]
    assert '<td class="text">hospital-d</td>' in participation
    assert "simulated failure of site 3 in round 2" in participation
    assert (run_dir / "partition.csv").read_text().startswith("site,train,test,class 0,class 1")
