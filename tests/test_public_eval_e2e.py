"""``medfed simulate`` on a pool with official val/test splits scores them on the server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medfed.cli import main

pytestmark = pytest.mark.slow


def test_simulate_reports_official_test_figures_next_to_the_pooled_ones(
    tmp_path: Path, capsys
) -> None:
    # Prepare: a tiny pool whose images show their label, with official val and test
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 120), ("val", 40), ("test", 60)):
        labels = np.arange(n) % 2
        images = rng.integers(0, 60, size=(n, 8, 8), dtype=np.uint8)
        images[labels == 1] += 150
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels.reshape(-1, 1)
    pool = tmp_path / "pool.npz"
    np.savez(pool, **arrays)
    scenario = tmp_path / "tiny.toml"
    scenario.write_text(
        'name = "tiny"\n[federation]\nnum-rounds = 2\nnum-sites = 2\n'
        "[privacy]\nenabled = false\n"
        f'[partition]\npool = "{pool}"\n'
        '[data]\nimage-size = 8\n[eval]\nserver-split = "official"\n'
    )
    # Execute
    code = main(["simulate", str(scenario), "--runs-dir", str(tmp_path / "runs"), "--seed", "1"])
    # Assert
    assert code == 0
    out = capsys.readouterr().out
    assert "official test auc" in out and "best official val AUC" in out
    (run_dir,) = (tmp_path / "runs").iterdir()
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    for line in lines:
        official = line["official"]
        assert (official["n_val"], official["n_test"]) == (40, 60)
        assert 0.0 <= official["auc"] <= 1.0 and 0.0 <= official["balanced_accuracy"] <= 1.0
        assert official["threshold"] is not None
    assert lines[-1]["official"]["auc"] > 0.9  # the label is in the pixels: learnt in 2 rounds
    stored = json.loads((run_dir / "config.json").read_text())["config"]
    assert stored["run.seed"] == 1
