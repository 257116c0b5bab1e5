"""The site's gate: a task runs only if its app is approved here, decided before any code.

A SuperNode started the medfed way (``flower-supernode --isolation process``) does not start
Flower's own SuperExec; the site runs ``medfed site executor`` instead, which is Flower's
SuperExec loop (``run_superexec``) with one change: the executor that launches each task.
``ApprovingExecutor`` looks at the task's FAB hash *before* anything is fetched, installed or
imported:
- approved (``client.approvals``): the task goes to the app's warm ClientApp process
  (``client.warm_worker``: one per approved FAB hash, started on its first task, which keeps
  the app loaded and the site's data in memory between rounds), or with ``warm=False`` to a
  fresh ``flwr-clientapp`` process per task, as Flower does by default;
- not approved: the gate itself answers the task with an error reply whose reason is
  ``app not approved at this site: <hash>`` (through Flower's Runtime API client, the same
  calls ``flwr-clientapp`` makes), keeps the FAB's bytes under ``<state-dir>/apps/`` for
  ``medfed site review``, and never installs or imports it.

Flower internals: every import from Flower's non-public modules is in this module, read from
flwr 1.42.0 (``flwr/supercore/superexec/run_superexec.py``, ``…/executor/*``,
``flwr/supernode/runtime/run_clientapp.py``); pyproject pins flwr to that version.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from flwr.app import Message
from flwr.app.error import Error
from flwr.common.constant import ErrorCode, SubStatus
from flwr.supercore.constant import TaskType
from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supercore.superexec import run_superexec as superexec_module
from flwr.supercore.superexec.executor import ExecutionSpec, LaunchResult
from flwr.supercore.superexec.executor.subprocess_executor import SubprocessExecutor
from flwr.supernode.runtime.run_clientapp import (
    pull_task_input,
    push_message,
    push_task_output,
)

from client.approvals import ApprovalStore
from common import keys
from common.errors import MedfedError
from common.keys import NOT_APPROVED

LOG = logging.getLogger("medfed.gate")


WARM_WORKER = Path(__file__).with_name("warm_worker.py")
PROC_EXE = "/proc/self/exe"
TASK_POLL_INTERVAL_ENV = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"  # read by run_superexec
TASK_DONE = "task-done"  # what a warm process writes to its stdout after each task


@dataclass
class WarmWorker:
    """One warm ClientApp process and how many of the tasks handed to it are unfinished."""

    process: subprocess.Popen[str]
    pending: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def follow(self) -> None:
        """Count the tasks the process reports finished (a thread; ends with the process)."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.strip() == TASK_DONE:
                with self.lock:
                    self.pending -= 1

    @property
    def idle(self) -> bool:
        with self.lock:
            return self.pending == 0


@dataclass
class WarmPool:
    """Warm ClientApp processes per approved FAB hash (``client.warm_worker``).

    A task goes to an idle warm process of its app. When every one is still busy (a round of
    another run, or a task of a run whose SuperLink died while the task's inputs were on their
    way: Flower keeps pulling those for up to 2 hours), another warm process is started for
    it instead of queueing the task behind the busy one; once more than one is idle again,
    the extra ones are ended.
    """

    workers: dict[str, list[WarmWorker]] = field(default_factory=dict)

    def submit(self, spec: ExecutionSpec) -> None:
        """Hand one task to an idle warm process of its app (started as needed)."""
        assert spec.fab_hash is not None
        alive = [w for w in self.workers.get(spec.fab_hash, []) if w.process.poll() is None]
        idle = [w for w in alive if w.idle]
        for extra in idle[1:]:
            self._end(extra)
            alive.remove(extra)
        if idle:
            worker = idle[0]
        else:
            worker = self._start(spec.fab_hash, busy=len(alive))
            alive.append(worker)
        self.workers[spec.fab_hash] = alive
        task = {
            "runtime_api_address": spec.runtime_api_address,
            "token": spec.token,
            "insecure": spec.insecure,
            "root_certificates_path": spec.root_certificates_path,
        }
        with worker.lock:
            worker.pending += 1
        assert worker.process.stdin is not None
        worker.process.stdin.write(json.dumps(task) + "\n")
        worker.process.stdin.flush()

    def _start(self, fab_hash: str, busy: int) -> WarmWorker:
        # -P: no script folder on sys.path, so only the FAB's own packages get imported.
        # The gate's own interpreter, through /proc/self/exe where there is one: the same
        # binary, and it starts even when an unprivileged site user may not search the
        # folder Python is installed in (the gate itself was started by a privileged one).
        interpreter = PROC_EXE if Path(PROC_EXE).exists() else sys.executable
        process = subprocess.Popen(
            [sys.executable, "-P", str(WARM_WORKER), fab_hash],
            executable=interpreter,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        worker = WarmWorker(process)
        threading.Thread(target=worker.follow, daemon=True).start()
        if busy:
            LOG.warning(
                "started another warm ClientApp process for app %s: %d busy with earlier tasks",
                fab_hash[:12],
                busy,
            )
        else:
            LOG.info("started a warm ClientApp process for app %s", fab_hash[:12])
        return worker

    @staticmethod
    def _end(worker: WarmWorker) -> None:
        if worker.process.stdin is not None:
            worker.process.stdin.close()  # it exits when its input closes

    def close(self) -> None:
        """End every warm process (they exit when their input closes)."""
        workers = [w for group in self.workers.values() for w in group]
        for worker in workers:
            self._end(worker)
        for worker in workers:
            try:
                worker.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.process.kill()


class ApprovingExecutor(SubprocessExecutor):
    """Flower's subprocess executor, launching only tasks of approved apps."""

    def __init__(self, store: ApprovalStore, *, warm: bool = True) -> None:
        self.store = store
        self.pool = WarmPool() if warm else None

    def close(self) -> None:
        """Stop the warm processes when SuperExec shuts down."""
        if self.pool is not None:
            self.pool.close()

    def launch(self, spec: ExecutionSpec) -> LaunchResult:
        """Run an approved ClientApp task; answer any other task with a refusal."""
        if spec.task_type != TaskType.CLIENT_APP:
            return LaunchResult.failed(f"task type '{spec.task_type}' is not run at a site")
        try:
            approved = self.store.is_approved(spec.fab_hash)
        except MedfedError as problem:  # an unreadable allow-list approves nothing
            LOG.error("%s", problem)
            approved = False
        if approved:
            if self.pool is None:
                return super().launch(spec)
            try:
                self.pool.submit(spec)
            except OSError as problem:
                return LaunchResult.failed(f"warm ClientApp process unavailable: {problem}")
            return LaunchResult.accepted()
        try:
            refuse_task(spec, self.store)
        except Exception as problem:  # the task then expires at the SuperNode
            LOG.error("could not answer the refused task %d: %s", spec.task_id, problem)
            return LaunchResult.failed(f"{NOT_APPROVED}; refusal not delivered: {problem}")
        return LaunchResult.accepted()


def _runtime_client(spec: ExecutionSpec) -> RuntimeHttpClient:
    certificates = (
        Path(spec.root_certificates_path).read_bytes() if spec.root_certificates_path else None
    )
    return RuntimeHttpClient.from_server_address(
        server_address=spec.runtime_api_address,
        insecure=spec.insecure,
        root_certificates=certificates,
        interceptors=[RuntimeTokenHttpInterceptor(spec.token)],
        retry_invoker=make_simple_http_retry_invoker(),
    )


def refuse_task(spec: ExecutionSpec, store: ApprovalStore) -> str:
    """Answer one task with ``app not approved at this site: <hash>``; return the reason.

    The task's message and FAB are pulled as data (nothing is installed or imported); the FAB
    is kept for review.
    """
    client = _runtime_client(spec)
    try:
        message, context, _run, fab = pull_task_input(client)
        fab_hash = fab.hash_str or spec.fab_hash or "unknown"
        if fab.content:
            store.keep_seen_app(fab_hash, fab.content)
        index = context.node_config.get(keys.NODE_PARTITION_ID)
        reason = keys.not_approved_reason(fab_hash, int(index) if index is not None else None)
        LOG.warning(
            "refused a task of run %d: %s (review it: medfed site review %s --state-dir %s)",
            context.run_id,
            reason,
            fab_hash[:12],
            store.state_dir,
        )
        reply = Message(
            Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=message
        )
        push_message(client, reply, context)
        push_task_output(client, context, SubStatus.FAILED, reason)
        return reason
    finally:
        client.close()


def run_site_executor(
    runtime_api_address: str,
    store: ApprovalStore,
    *,
    insecure: bool = True,
    root_certificates_path: str | None = None,
    warm: bool = True,
) -> None:
    """Flower's SuperExec loop with the approving executor (runs until stopped)."""
    # Flower's SuperExec asks its (loopback) SuperNode for a task every second by default;
    # a warm process answers in milliseconds, so ask more often.
    os.environ.setdefault(TASK_POLL_INTERVAL_ENV, "0.2")
    executor = ApprovingExecutor(store, warm=warm)
    # run_superexec builds its executor with the module-level ``get_executor``; hand it ours.
    superexec_module.get_executor = lambda *args, **kwargs: executor  # type: ignore[assignment]
    superexec_module.run_superexec(
        runtime_api_address=runtime_api_address,
        insecure=insecure,
        root_certificates_path=root_certificates_path,
        runtime_dependency_install=False,
    )
