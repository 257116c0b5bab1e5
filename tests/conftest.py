"""Shared fixtures: small synthetic hospitals and configs sized for fast tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from common.config import MedfedConfig
from common.data.synthetic import generate_site
from medfed.testing.timing import SCALE_ENV, measured_factor, setting, timeout_scale

SMALL_IMAGES = 48
SMALL_PX = 64

# Tests that start Flower's simulation engine themselves (not through simulations.runner)
# get the runner's worker priority too: Ray starts its workers at nice 15, where a busy
# machine starves them (tests/test_secagg.py sat at 1 % CPU next to five simulations).
os.environ.setdefault("RAY_worker_niceness", "0")


def pytest_report_header() -> str:
    """Measure the machine's speed once, at the start of the session, and say what it gave."""
    return (
        f"test timeouts x{timeout_scale():.2f} "
        f"(measured {measured_factor():.2f}, {SCALE_ENV}={setting():g})"
    )


@pytest.fixture(scope="session")
def small_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 48-image synthetic hospital (read-only for tests: copy it before damaging it)."""
    root = tmp_path_factory.mktemp("sites") / "hospital-a"
    return generate_site(root, 0, seed=0, num_images=SMALL_IMAGES, image_size=SMALL_PX)


@pytest.fixture
def small_config(tmp_path: Path) -> MedfedConfig:
    """A fast config: 32-pixel inputs, 2 rounds, small synthetic hospitals under tmp_path."""
    return MedfedConfig().replace(
        **{
            "data.image-size": 32,
            "data.synthetic-root": str(tmp_path / "synthetic"),
            "data.synthetic-images-per-site": SMALL_IMAGES,
            "data.synthetic-image-size": SMALL_PX,
            "federation.num-rounds": 2,
            "federation.num-sites": 2,
            "run.runs-dir": str(tmp_path / "runs"),
            "train.batch-size": 16,
        }
    )
