"""A ClientApp process bounds oneDNN's primitive cache before its first convolution
(``client.onednn``), unless the site's environment already says how."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from client.app import build_client_app
from client.onednn import PRIMITIVE_CACHE_CAPACITY, PRIMITIVE_CACHE_ENV


def test_building_the_client_app_bounds_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PRIMITIVE_CACHE_ENV, raising=False)

    build_client_app()

    assert os.environ[PRIMITIVE_CACHE_ENV] == str(PRIMITIVE_CACHE_CAPACITY)


def test_a_sites_own_setting_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PRIMITIVE_CACHE_ENV, "0")

    build_client_app()

    assert os.environ[PRIMITIVE_CACHE_ENV] == "0"


def test_the_clientapp_module_bounds_it_in_a_fresh_process_before_any_convolution() -> None:
    """What ``flwr-clientapp`` does: import ``client.app:app`` in a new process."""
    env = {k: v for k, v in os.environ.items() if k != PRIMITIVE_CACHE_ENV}
    code = f"import os, client.app; print(os.environ[{PRIMITIVE_CACHE_ENV!r}])"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == str(PRIMITIVE_CACHE_CAPACITY)
