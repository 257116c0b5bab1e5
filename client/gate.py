"""The site's gate: a task runs only if its app is approved here, decided before any code.

A SuperNode started the medfed way (``flower-supernode --isolation process``) does not start
Flower's own SuperExec; the site runs ``medfed site executor`` instead, which is Flower's
SuperExec loop (``run_superexec``) with one change: the executor that launches each task.
``ApprovingExecutor`` looks at the task's FAB hash *before* anything is fetched, installed or
imported:
- approved (``client.approvals``): the task goes to Flower's ClientApp process as usual;
- not approved: the gate itself answers the task with an error reply whose reason is
  ``app not approved at this site: <hash>`` (through Flower's Runtime API client, the same
  calls ``flwr-clientapp`` makes), keeps the FAB's bytes under ``<state-dir>/apps/`` for
  ``medfed site review``, and never installs or imports it.

Flower internals: every import from Flower's non-public modules is in this module, read from
flwr 1.42.0 (``flwr/supercore/superexec/run_superexec.py``, ``…/executor/*``,
``flwr/supernode/runtime/run_clientapp.py``); pyproject pins flwr to that version.
"""

from __future__ import annotations

import logging
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


class ApprovingExecutor(SubprocessExecutor):
    """Flower's subprocess executor, launching only tasks of approved apps."""

    def __init__(self, store: ApprovalStore) -> None:
        self.store = store

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
            LOG.info("running approved app %s", spec.fab_hash)
            return super().launch(spec)
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
) -> None:
    """Flower's SuperExec loop with the approving executor (runs until stopped)."""
    executor = ApprovingExecutor(store)
    # run_superexec builds its executor with the module-level ``get_executor``; hand it ours.
    superexec_module.get_executor = lambda *args, **kwargs: executor  # type: ignore[assignment]
    superexec_module.run_superexec(
        runtime_api_address=runtime_api_address,
        insecure=insecure,
        root_certificates_path=root_certificates_path,
        runtime_dependency_install=False,
    )
