"""What leaves a site: redacted error replies, the outbound audit, the SecAgg+ switch."""

from __future__ import annotations

import json
import time
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, Metadata, MetricRecord, RecordDict
from flwr.app.message.message import make_message
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage

from client.app import build_client_app
from client.outbound import AUDIT_INDEX, audit_outbound, contain_errors, read_audit
from common import keys
from common.errors import SiteDataError

PHI_PATH = "/data/export/DOE^JANE^1961/img_0001.dcm"


def _incoming(content: RecordDict, message_type: str = "train") -> Message:
    metadata = Metadata(
        run_id=1,
        message_id="incoming-1",
        src_node_id=1,
        dst_node_id=7,
        reply_to_message_id="",
        group_id="1",
        created_at=time.time(),
        ttl=3600.0,
        message_type=message_type,
    )
    return make_message(metadata, content)


def _context(node_config: dict | None = None, run_config: dict | None = None) -> Context:
    return Context(
        run_id=1,
        node_id=7,
        node_config=node_config or {},
        state=RecordDict(),
        run_config=run_config or {},
    )


def test_an_exception_at_the_site_crosses_the_wire_without_its_text() -> None:
    def failing(msg: Message, context: Context) -> Message:
        raise SiteDataError("hospital-a", "cannot decode pixel data", PHI_PATH)

    reply = contain_errors(_incoming(RecordDict()), _context(), failing)

    assert reply.has_error()
    assert reply.metadata.reply_to_message_id == "incoming-1"
    assert reply.error.reason.startswith("SiteDataError at the site")
    assert "DOE" not in reply.error.reason and "img_0001" not in reply.error.reason


def test_the_audit_keeps_an_exact_copy_of_each_reply(tmp_path: Path) -> None:
    metrics = MetricRecord({keys.NUM_EXAMPLES: 12, keys.TRAIN_LOSS: 0.5})

    def handler(msg: Message, context: Context) -> Message:
        return Message(RecordDict({keys.METRICS: metrics}), reply_to=msg)

    audit = tmp_path / "audit"
    audit_outbound(_incoming(RecordDict()), _context({keys.NODE_AUDIT_DIR: str(audit)}), handler)
    audit_outbound(_incoming(RecordDict()), _context(), handler)  # no audit-dir: nothing kept

    recorded = list(read_audit(audit))
    assert len(recorded) == 1
    _, message = recorded[0]
    assert dict(message.content[keys.METRICS]) == dict(metrics)
    summary = json.loads((audit / AUDIT_INDEX).read_text())
    assert summary["records"] == {keys.METRICS: dict(metrics)}


def test_the_client_app_hands_secagg_workflow_messages_to_secaggplus_and_others_to_medfed() -> None:
    setup = RecordDict(
        {
            RECORD_KEY_CONFIGS: ConfigRecord(
                {
                    Key.STAGE: Stage.SETUP,
                    Key.SAMPLE_NUMBER: 2,
                    Key.SHARE_NUMBER: 2,
                    Key.THRESHOLD: 2,
                    Key.CLIPPING_RANGE: 8.0,
                    Key.TARGET_RANGE: 4194304,
                    Key.MOD_RANGE: 4294967296,
                    Key.MAX_WEIGHT: 1000.0,
                }
            )
        }
    )
    app = build_client_app()

    on = app(_incoming(setup), _context())
    foreign = RecordDict({keys.CONFIG: ConfigRecord({"data.image-size": 32})})  # no arrays
    off = app(_incoming(foreign), _context())

    assert not on.has_error()
    answer = on.content[RECORD_KEY_CONFIGS]
    assert isinstance(answer[Key.PUBLIC_KEY_1], bytes) and isinstance(
        answer[Key.PUBLIC_KEY_2], bytes
    )
    # a medfed instruction (round settings under "config") goes to the Message-API handler,
    # which fails (this node has no data), and only the exception's type leaves the site
    assert off.has_error() and off.error.reason.startswith("ConfigError at the site")
