"""No wasted budget on a resume: the coordinator dies mid-round 2 of 4, the run is resumed.

Through Flower's simulation engine, in this process: the coordinator "dies" after the sites
trained round 2 (each booked it in its ledger and sent its update) but before round 2 was
checkpointed. The resumed run starts again from round 1's checkpoint, so round 2 is trained
twice; each site re-plans its noise from its ledger, so rounds 3 and 4 are not declined and
every site still ends within the run's target epsilon. Run with ``-s`` to see each site's
epsilon before and after the resume.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

import server.lifecycle
from common.config import MedfedConfig
from common.ledger import (
    LEDGER_FILE,
    check_against,
    check_chain,
    check_epsilons,
    read_ledger,
    run_spends,
)
from common.signing import load_public_key, public_key_path
from server.checkpoint import load_latest
from server.rundir import METRICS_FILE, RunDirectory
from simulations.runner import run_simulated_federation
from tests._fed_helpers import PNEUMONIA

pytestmark = pytest.mark.slow
TARGET = 8.0


class CoordinatorDied(RuntimeError):
    """The SuperLink going down, as the ServerApp sees it."""


def _config(tmp_path: Path) -> MedfedConfig:
    return MedfedConfig().replace(
        **{
            "partition.pool": str(PNEUMONIA),
            "partition.kind": "iid",
            "partition.max-images": 240,
            "partition.min-size": 30,
            "data.image-size": 28,
            "train.batch-size": 32,
            "federation.num-sites": 3,
            "federation.num-rounds": 4,
            "federation.min-sites": 2,
            "privacy.enabled": True,
            "privacy.target-epsilon": TARGET,
            "privacy.accountant": "rdp",  # PRV's noise search costs seconds per site and round
            "run.run-dir": str(tmp_path / "runs" / "resume-budget"),
            # the simulated sites' privacy ledgers go here, never into the home directory
            "data.synthetic-root": str(tmp_path / "synthetic"),
            "run.seed": 1,
        }
    )


def test_a_run_resumed_after_the_coordinator_died_mid_round_trains_every_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: the coordinator dies once round 2's updates are in, before its checkpoint
    config = _config(tmp_path)
    save_checkpoint = server.lifecycle.save_checkpoint

    def dies_at_round_two(run_dir: Path, checkpoint, **options) -> None:  # type: ignore[no-untyped-def]
        if checkpoint.round == 2:
            raise CoordinatorDied("the SuperLink went down during round 2")
        save_checkpoint(run_dir, checkpoint, **options)

    monkeypatch.setattr(server.lifecycle, "save_checkpoint", dies_at_round_two)
    with pytest.raises(CoordinatorDied):
        run_simulated_federation(config, console=Console(file=io.StringIO()))
    run_dir = Path(config.run.run_dir)
    killed_at = load_latest(run_dir)
    assert killed_at is not None and killed_at.round == 1
    ledgers = sorted((tmp_path / "synthetic" / ".privacy").glob(f"*/{LEDGER_FILE}"))
    assert len(ledgers) == 3
    run_key = RunDirectory.open_existing(run_dir).run_key()  # what the sites book under
    before = {path.parent.name: run_spends(read_ledger(path)) for path in ledgers}
    assert all(spend[run_key].rounds == 2 for spend in before.values())

    # Execute: the documented resume
    monkeypatch.setattr(server.lifecycle, "save_checkpoint", save_checkpoint)
    output = io.StringIO()
    run_simulated_federation(
        config.replace(**{"run.resume": True}), console=Console(file=output, width=240)
    )

    # Assert: 4 aggregated rounds, nobody declined, every site within its target
    assert "Resuming resume-budget after round 1/4" in output.getvalue()
    rounds = [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2, 3, 4]
    for record in rounds:
        assert record["aggregated"], record
        assert len(record["train_sites"]) == 3 and not record["declined"], record
    print(f"\nper-site epsilon (target {TARGET:g}, rdp, 4 rounds, killed mid-round 2, resumed):")
    for path in ledgers:
        site = path.parent.name
        records = read_ledger(path)
        # the ledger books the lost round honestly, and verifies (chain, signatures,
        # epsilon, and every copy the coordinator kept)
        assert [r.round for r in records if r is not None] == [1, 2, 2, 3, 4]
        key = load_public_key(public_key_path(path.parent / "ledger-key.pem"))
        assert check_chain(records, key) == []
        assert check_epsilons(records) == []
        copies = read_ledger(run_dir / "attestations" / f"{site}.jsonl")
        assert len(copies) == 5 and check_against(records, copies) == []
        spend = run_spends(records)[run_key]
        assert spend.redone == [2]
        assert TARGET - 0.05 <= spend.epsilon <= TARGET
        assert rounds[-1]["epsilon"][site] == pytest.approx(spend.epsilon)
        noise = [r.noise_multiplier for r in records if r is not None]
        assert noise[0] == noise[1] < noise[2] == noise[3] == noise[4]
        print(
            f"  {site}: killed after round 2 at ε={before[site][run_key].epsilon:.4f} "
            f"(noise {noise[0]:.4f}); resumed, re-planned noise {noise[2]:.4f}, "
            f"after round 4 ε={spend.epsilon:.4f}"
        )
