"""`flwr run .` (Flower's own CLI + local SuperLink) runs the same federation as the demo."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from medfed.testing.timing import scaled

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_flwr_run_on_local_simulation_writes_run_dir_and_stops_superlink(
    tmp_path: Path,
) -> None:
    flwr_home = tmp_path / "flwr-home"
    runs = tmp_path / "runs"
    overrides = (
        f'data.synthetic-root="{tmp_path / "synthetic"}" data.synthetic-images-per-site=40 '
        f'federation.num-rounds=2 run.runs-dir="{runs}"'
    )
    env = {**os.environ, "FLWR_HOME": str(flwr_home)}

    result = subprocess.run(
        [str(REPO / "scripts" / "flwr-run-local.sh"), "2", "--run-config", overrides],
        env=env,
        capture_output=True,
        text=True,
        timeout=scaled(300),
        check=False,
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    (run_dir,) = runs.iterdir()
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [1, 2]
    assert (run_dir / "report.html").exists()
    leftover = subprocess.run(
        ["pgrep", "-f", str(flwr_home)], capture_output=True, text=True, check=False
    )
    alive = [pid for pid in leftover.stdout.split() if not _is_zombie(int(pid))]
    assert alive == [], "the local SuperLink was left running"


def _is_zombie(pid: int) -> bool:
    """A killed child of an init that does not reap (as in containers) stays a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"
