"""The server keeps every site's signed privacy record, as received, in the run directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.task_identity import TaskIdentity

from common import keys
from common.config import ValidationConfig
from common.ledger import (
    GENESIS,
    LedgerRecord,
    check_chain,
    read_ledger,
    record_to_wire,
    update_digest,
)
from server.attestations import AttestationStore, attestation_file
from server.guarded import GuardedStrategy
from server.recorder import RoundRecord, RoundRecorder
from tests._fed_helpers import FakeGrid, task_identity

__all__ = ["task_identity"]  # the fixture, imported for pytest

KEY = Ed25519PrivateKey.generate()


def _reply(site: int, value: float, status: int = keys.STATUS_TRAINED) -> Message:
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    arrays = ArrayRecord({"w": Array(np.full(3, value, dtype=np.float32))})
    metrics = MetricRecord(
        {
            keys.NUM_EXAMPLES: 10 if status == keys.STATUS_TRAINED else 0,
            keys.SITE_INDEX: site,
            keys.TRAIN_LOSS: 0.5,
            keys.TRAIN_STATUS: status,
        }
    )
    content = RecordDict({keys.ARRAYS: arrays, keys.METRICS: metrics})
    if status == keys.STATUS_TRAINED:
        record = LedgerRecord(
            "run", 1, 0.1, 1.0, 10, "rdp", 0.5, 1e-5, update_digest(arrays), GENESIS, 0
        ).signed(KEY)
        content[keys.ATTESTATION] = ConfigRecord(record_to_wire(record))  # type: ignore[arg-type]
    return Message(content=content, dst_node_id=site + 1, message_type=MessageType.TRAIN)


@pytest.mark.usefixtures("task_identity")
def test_trained_replies_are_kept_accepted_or_rejected(tmp_path: Path) -> None:
    recorded: list[RoundRecord] = []
    store = AttestationStore(tmp_path)
    recorder = RoundRecorder(listener=lambda r, a: recorded.append(r), on_trained=store.keep)
    guarded = GuardedStrategy(
        FedAvg(train_metrics_aggr_fn=recorder.aggregate_train),
        validation=ValidationConfig(),
        min_replies=1,
        on_participation=recorder.record_participation,
        on_declined=recorder.record_declined,
    )
    global_model = ArrayRecord({"w": Array(np.zeros(3, dtype=np.float32))})
    list(guarded.configure_train(1, global_model, ConfigRecord({}), FakeGrid([1, 2, 3, 4])))
    replies = [
        _reply(0, 1.0),
        _reply(1, 3.0),
        _reply(2, float("nan")),  # rejected by validation: it trained and spent all the same
        _reply(3, 0.0, keys.STATUS_DECLINED_BUDGET),  # spent nothing: no attestation
    ]

    arrays, _ = guarded.aggregate_train(1, replies)

    assert arrays is not None  # the extra record does not disturb aggregation
    np.testing.assert_allclose(arrays["w"].numpy(), 2.0)
    for site in ("hospital-a", "hospital-b", "hospital-c"):
        (copy,) = read_ledger(attestation_file(tmp_path, site))
        assert copy is not None and check_chain([copy], KEY.public_key()) == []
    assert not attestation_file(tmp_path, "hospital-d").exists()
