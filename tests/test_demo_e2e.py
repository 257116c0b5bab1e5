"""The demo pipeline end to end through the public entry point, at a small size."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.config import MedfedConfig
from common.models import build_model


@pytest.mark.slow
def test_demo_writes_a_complete_run_directory(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "medfed",
            "demo",
            "--sites",
            "2",
            "--rounds",
            "2",
            "--images-per-site",
            "40",
            "--runs-dir",
            str(runs),
            "--synthetic-root",
            str(tmp_path / "synthetic"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = runs.iterdir()
    assert run_dir.name.endswith("-demo")
    assert {"config.json", "metrics.jsonl", "model.pt", "report.html"} <= {
        p.name for p in run_dir.iterdir()
    }
    rounds = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2]
    eps = [r["epsilon_max"] for r in rounds]
    assert all(math.isfinite(e) and e > 0 for e in eps)
    assert eps[0] < eps[1]
    for record in rounds:
        assert 0.0 <= record["auc"] <= 1.0
        assert record["train_sites"] == ["hospital-a", "hospital-b"]
        assert set(record["epsilon"]) == {"hospital-a", "hospital-b"}
    assert "round 2/2" in result.stdout
    assert "pooled" in result.stdout and str(run_dir) in result.stdout.replace("\n", "")
    report = (run_dir / "report.html").read_text()
    assert "<svg" in report and "<td>2</td>" in report  # plots inline, round 2 in the table
    saved = torch.load(run_dir / "model.pt", weights_only=False)
    model = build_model(MedfedConfig().model, saved["in_channels"])
    model.load_state_dict(saved["state_dict"])
    assert saved["round"] == 2
