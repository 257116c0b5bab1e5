"""Timeouts for tests that start real processes, scaled to how fast this machine is right now.

A deployment test waits for processes it does not control (a SuperLink, SuperNodes, ``flwr
run``); on a machine shared with other CPU-bound work the same run takes several times
longer. So no test uses a fixed number of seconds: it asks for ``scaled(base)``, where
``base`` is what the wait needs on a quiet 2-core machine and the factor is

- measured once per process: a fixed, small, single-threaded CPU workload is timed (the
  median of three tries, ~0.4 s in all on a quiet machine) and compared with the time it
  took on the quiet reference machine, ``REFERENCE_S``; factor = max(1, measured /
  reference). A machine that is busy (or slower) when the tests start gets longer waits;
- raised by the setting ``MEDFED_TEST_TIMEOUT_SCALE`` (a number ≥ 1), for a machine that
  becomes busy only later: the factor is the larger of the two.

``make test-under-load`` runs the suite next to two CPU-bound processes to check this.
"""

from __future__ import annotations

import functools
import os
import statistics
import time

SCALE_ENV = "MEDFED_TEST_TIMEOUT_SCALE"
# The probe below took 0.14 s (median of 3 tries, three runs 0.138-0.141 s) on the project's
# 2-core development machine at load average 0.2 (python 3, 2026-11-30).
REFERENCE_S = 0.14
_ITERATIONS = 3_000_000


def _probe() -> float:
    """Seconds of wall time for a fixed pure-Python loop (one core's worth of work)."""
    start = time.perf_counter()
    total = 0
    for i in range(_ITERATIONS):
        total += i * i % 7
    return time.perf_counter() - start


@functools.cache
def measured_factor() -> float:
    """How much slower than the quiet reference machine this one is now (at least 1)."""
    return max(1.0, statistics.median(_probe() for _ in range(3)) / REFERENCE_S)


def setting() -> float:
    """``MEDFED_TEST_TIMEOUT_SCALE`` (1 when unset); a bad value is one clear error."""
    raw = os.environ.get(SCALE_ENV, "").strip()
    if not raw:
        return 1.0
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value >= 1.0:  # also refuses nan
        raise ValueError(f"{SCALE_ENV} must be a number >= 1, got {raw!r}")
    return value


def timeout_scale() -> float:
    """The factor every test timeout is multiplied by."""
    return max(measured_factor(), setting())


def scaled(base_s: float) -> float:
    """``base_s`` (seconds a wait needs on a quiet machine) times the timeout scale."""
    return base_s * timeout_scale()
