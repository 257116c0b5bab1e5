"""A warm ClientApp process for one approved app: Flower's per-task steps, in a loop.

Flower's ``flwr-clientapp`` starts a fresh Python process for every message (about 3 s of
imports, the FAB installed again, the site's data read again). The site's gate
(``client.gate``) instead keeps one process per approved FAB hash and hands it each task's
launch details (one JSON line on stdin). For every task this process makes the same calls
``flwr-clientapp`` makes (pull the task input from the SuperNode's Runtime API, call the
ClientApp, push the reply and the task's outcome), but it installs and loads the app once
and keeps the ClientApp object, so the site's data stays loaded between rounds. After each
task it writes one line to stdout, which the gate reads to know the process is idle again.

It is started as a script with ``python -P`` and imports nothing of medfed itself: the only
``client`` / ``common`` package it ever imports is the approved FAB's own, loaded by Flower
from the installed bundle, never the site's installed release. Before loading, it checks that
the bundle's SHA-256 is the approved hash it was started for.

Flower internals (read from flwr 1.42.0, ``flwr/supernode/runtime/run_clientapp.py``) are
imported here and in ``client.gate`` only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from flwr.app import Message
from flwr.app.error import Error
from flwr.cli.install import install_from_fab
from flwr.clientapp.utils import get_load_client_app_fn
from flwr.common.constant import ErrorCode, SubStatus
from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supernode.runtime.run_clientapp import (
    pull_task_input,
    push_message,
    push_task_output,
)

LOG = logging.getLogger("medfed.gate.warm")
TASK_DONE = "task-done"  # = client.gate.TASK_DONE (this script imports nothing of medfed)


class WarmApp:
    """The ClientApp of one approved FAB, loaded on its first task and kept."""

    def __init__(self, fab_hash: str) -> None:
        self.fab_hash = fab_hash
        self.app: Any = None

    def _load(self, fab_id: str, fab_version: str, content: bytes, hash_str: str) -> Any:
        if hashlib.sha256(content).hexdigest() != self.fab_hash or hash_str != self.fab_hash:
            raise RuntimeError(f"the app bundle is not the approved one ({self.fab_hash})")
        if self.app is None:
            install_from_fab(content, skip_prompt=True)
            load = get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)
            self.app = load(fab_id, fab_version, hash_str)
        return self.app

    def run_task(self, task: dict[str, Any]) -> None:
        """One task, as ``flwr-clientapp`` runs it: pull, call the ClientApp, push."""
        certificates = task.get("root_certificates_path")
        client = RuntimeHttpClient.from_server_address(
            server_address=task["runtime_api_address"],
            insecure=bool(task["insecure"]),
            root_certificates=Path(certificates).read_bytes() if certificates else None,
            interceptors=[RuntimeTokenHttpInterceptor(task["token"])],
            retry_invoker=make_simple_http_retry_invoker(),
        )
        heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
        heartbeat.start()
        message = context = reply = None
        status, details = SubStatus.FAILED, "ClientApp task failed"
        try:
            message, context, run, fab = pull_task_input(client)
            app = self._load(run.fab_id, run.fab_version, fab.content, fab.hash_str)
            reply = app(message=message, context=context)
            status, details = SubStatus.COMPLETED, ""
        except Exception as problem:  # answer the task; the process stays warm
            LOG.error("task failed in the warm ClientApp process: %s", problem)
            details = f"{type(problem).__name__} in the site's ClientApp process"
            if message is not None:
                reply = Message(
                    Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=details),
                    reply_to=message,
                )
        finally:
            try:
                if reply is not None and context is not None:
                    push_message(client, reply, context)
                push_task_output(client, context, status, details)
            finally:
                if heartbeat.is_running:
                    heartbeat.stop()
                client.close()


def main() -> None:
    """Serve the tasks the gate writes to stdin (one JSON object per line) until EOF."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger("medfed").addHandler(handler)
    # stdout tells the gate when a task is finished (one line each); everything else the app
    # or Flower prints goes to stderr
    done = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    warm = WarmApp(sys.argv[1])
    for line in sys.stdin:
        if line.strip():
            try:
                warm.run_task(json.loads(line))
            except Exception as problem:  # e.g. the reply could not be delivered: keep serving
                LOG.error("task ended without a delivered reply: %s", problem)
            finally:
                done.write(TASK_DONE + "\n")


if __name__ == "__main__":
    main()
