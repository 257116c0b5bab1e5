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
from medfed.testing.timing import scaled


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
        timeout=scaled(300),
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
    final = rounds[-1]
    assert saved["threshold"] == final["threshold"]  # the val-chosen threshold ships with it
    assert final["threshold_rule"].startswith("youden")
    assert set(final["curves"]) == {"val", "test"}
    assert len(final["curves"]["test"]["tp"]) == 101
    assert sum(final["calibration"]["count"]) == sum(map(sum, final["confusion"]))
    assert set(final["fairness"]["sites"]) == {"hospital-a", "hospital-b"}


def _demo(tmp_path: Path, *flags: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    runs, synthetic = tmp_path / "runs", tmp_path / "synthetic"
    command = ["-m", "medfed", "demo", *flags, "--runs-dir", str(runs)]
    result = subprocess.run(
        [sys.executable, *command, "--synthetic-root", str(synthetic)],
        capture_output=True,
        text=True,
        timeout=scaled(900),
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = runs.iterdir()
    return result, [
        json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]


@pytest.mark.slow
def test_the_demo_recipe_learns_to_find_disease_under_dp_at_a_small_size(tmp_path: Path) -> None:
    """3 hospitals x 160 images, 10 rounds, DP eps = 8 per site (the demo's recipe).

    What holds for this size (one seed; the full demo's figures are in BENCHMARKS.md): the
    model ranks far better than chance by the end and better than after round 1, and at the
    validation-chosen threshold it finds disease and clears healthy images better than chance.
    """
    result, rounds = _demo(tmp_path, "--rounds", "10", "--images-per-site", "160")

    aucs = [r["auc"] for r in rounds]
    final = rounds[-1]
    assert max(aucs[-3:]) > aucs[0]
    assert final["auc"] >= 0.75
    assert final["sensitivity"] > 0.5 and final["specificity"] > 0.5
    assert final["balanced_accuracy"] >= 0.65
    assert final["epsilon_max"] == pytest.approx(8.0, abs=0.05)
    assert f"sens {final['sensitivity']:.3f}" in result.stdout
