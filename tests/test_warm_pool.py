"""The gate's warm pool never queues a task behind a busy warm process (issue 18).

After a SuperLink crash a warm ClientApp process can stay busy for hours pulling the inputs
of a task whose run died; the next run's task must still run at once. A stand-in for
``client/warm_worker.py`` (same protocol: one JSON task per stdin line, ``task-done`` on
stdout after each) hangs on tasks whose token is ``hang`` and finishes the others.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from flwr.supercore.constant import TaskType
from flwr.supercore.superexec.executor import ExecutionSpec

from client import gate

STAND_IN = """
import json, sys, time
for line in sys.stdin:
    task = json.loads(line)
    if task["token"] == "hang":
        time.sleep(3600)
    print("task-done", flush=True)
"""
FAB = "ab" * 32


def _spec(token: str, task_id: int) -> ExecutionSpec:
    return ExecutionSpec(
        task_type=TaskType.CLIENT_APP,
        runtime_api_address="127.0.0.1:1",
        token=token,
        insecure=True,
        root_certificates_path=None,
        runtime_dependency_install=False,
        parent_pid=None,
        suppress_output=True,
        task_id=task_id,
        fab_hash=FAB,
    )


def _settle(pool: gate.WarmPool, idle: int) -> None:
    deadline = time.monotonic() + 30
    while sum(w.idle for w in pool.workers[FAB]) != idle:
        assert time.monotonic() < deadline, "the stand-in never reported its task done"
        time.sleep(0.05)


def test_a_busy_warm_process_gets_company_not_a_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in = tmp_path / "warm_worker.py"
    stand_in.write_text(STAND_IN)
    monkeypatch.setattr(gate, "WARM_WORKER", stand_in)
    pool = gate.WarmPool()
    try:
        pool.submit(_spec("hang", 1))  # a dead run's task: never finishes
        pool.submit(_spec("ok", 2))  # the next run's task: a second process takes it
        hung, second = pool.workers[FAB]
        _settle(pool, idle=1)
        assert not hung.idle and second.idle

        pool.submit(_spec("ok", 3))  # goes to the idle warm process: no third one
        _settle(pool, idle=1)
        assert pool.workers[FAB] == [hung, second]
        assert second.process.poll() is None  # still warm
    finally:
        for worker in pool.workers.get(FAB, []):
            worker.process.kill()
        pool.close()
