"""What leaves a site: two ClientApp mods that guard and record every reply.

``contain_errors`` turns an exception in the site's handlers into a Flower error reply whose
reason names only the exception type. Without it Flower sends ``str(exception)`` to the
server, and medfed's data errors name files (paths can carry patient names or IDs); the
full message stays in the site's own log.

``audit_outbound`` keeps an exact copy of every reply when the SuperNode's node config has
``audit-dir`` (``--node-config '… audit-dir="/var/log/medfed/outbound"'``): one file per
message in Flower's own protobuf serialisation (metadata and content, as handed to the
SuperNode) and one JSON line summarising it (record names, array shapes, scalar metrics).
A hospital can thus inspect exactly what it sent; tests use it to check the wire.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.constant import ErrorCode
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.proto.message_pb2 import Message as ProtoMessage  # pylint: disable=E0611

from common import keys
from common.errors import MedfedError

LOG = logging.getLogger("medfed.client")
AUDIT_SUFFIX = ".pb"
AUDIT_INDEX = "outbound.jsonl"


def contain_errors(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Reply with a redacted error instead of letting exception text cross the wire."""
    try:
        return call_next(msg, context)
    except Exception as error:  # any failure: log it here, send only its type
        if isinstance(error, MedfedError):  # a one-line explanation: no traceback needed
            LOG.error("%s handler failed at this site: %s", msg.metadata.message_type, error)
        else:
            LOG.error("%s handler failed at this site", msg.metadata.message_type, exc_info=error)
        reason = f"{type(error).__name__} at the site (details in the site's SuperNode log)"
        return Message(
            Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=msg
        )


def audit_outbound(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Pass the message on; copy the reply into ``audit-dir`` when the node config sets it."""
    reply = call_next(msg, context)
    folder = context.node_config.get(keys.NODE_AUDIT_DIR)
    if folder:
        write_audit(Path(str(folder)), reply)
    return reply


@dataclass(frozen=True)
class AuditTo:
    """A mod that copies every reply into a fixed ``folder`` (picklable, for simulations)."""

    folder: Path

    def __call__(self, msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        reply = call_next(msg, context)
        write_audit(self.folder, reply)
        return reply


def summarise(message: Message) -> dict[str, object]:
    """Record names, array shapes and scalar metrics of a message (no array values)."""
    summary: dict[str, object] = {"type": message.metadata.message_type}
    if message.has_error():
        summary["error"] = message.error.reason
        return summary
    records: dict[str, object] = {}
    for name, record in message.content.items():
        if isinstance(record, ArrayRecord):
            records[name] = {k: list(a.shape) for k, a in record.items()}
        elif isinstance(record, MetricRecord):
            records[name] = dict(record)
        elif isinstance(record, ConfigRecord):
            records[name] = {k: type(v).__name__ for k, v in record.items()}
    summary["records"] = records
    return summary


def write_audit(folder: Path, message: Message) -> Path:
    """Write one outbound message (protobuf) and append its summary line."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{time.time_ns()}-{os.getpid()}-{message.metadata.message_type}"
    path = folder / f"{stem}{AUDIT_SUFFIX}"
    path.write_bytes(message_to_proto(message).SerializeToString())
    with open(folder / AUDIT_INDEX, "a") as index:
        index.write(json.dumps({"file": path.name, **summarise(message)}) + "\n")
    return path


def read_audit(folder: Path) -> Iterator[tuple[Path, Message]]:
    """Every message recorded in ``folder``, oldest first."""
    for path in sorted(folder.glob(f"*{AUDIT_SUFFIX}")):
        proto = ProtoMessage()
        proto.ParseFromString(path.read_bytes())
        yield path, message_from_proto(proto)
