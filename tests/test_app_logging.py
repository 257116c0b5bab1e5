"""The apps' processes print each Flower log line once.

Regression: importing Opacus calls ``logging.basicConfig``, so the root logger of a ServerApp
or ClientApp process carried a stderr handler and every ``flwr`` line (the round log an
operator streams with ``flwr run --stream``, a site's "loaded N images") printed twice, the
second time as ``12/07/2026 01:48:41:INFO:…``. Seen by following the README's deployment by
hand; run in a fresh interpreter because this test process imported both apps long ago.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("app", ["server.app", "client.app"])
def test_a_flower_log_line_prints_once_in_an_app_process(app: str) -> None:
    code = (
        f"import {app}\n"
        "from logging import INFO\n"
        "from flwr.common.logger import log\n"
        "log(INFO, 'marker-line-for-the-test')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (done.stdout + done.stderr).count("marker-line-for-the-test") == 1, done.stderr
