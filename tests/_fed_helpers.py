"""Shared test helpers: reply messages without a SuperLink, the shared data root, a tiny pool."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Error, Message, MessageType, Metadata, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.task_identity import TaskIdentity

from common import keys
from common.config import ValidationConfig
from server.guarded import GuardedStrategy
from server.recorder import RoundRecord, RoundRecorder
from simulations.scenario import DEFAULT_DATA_ROOT

# ../shared/data beside the repository, or MEDFED_SHARED_DATA (as in tests/shared_data.py)
DATA_ROOT = Path(os.environ.get("MEDFED_SHARED_DATA", str(DEFAULT_DATA_ROOT)))
PNEUMONIA = DATA_ROOT / "medmnist" / "pneumoniamnist.npz"


def metadata(node_id: int, server_round: int = 1) -> Metadata:
    """Metadata of a train reply from ``node_id``."""
    return Metadata(
        run_id=1,
        message_id=f"reply-{node_id}-{server_round}",
        src_node_id=node_id,
        dst_node_id=0,
        reply_to_message_id=f"ins-{node_id}-{server_round}",
        group_id=str(server_round),
        created_at=time.time(),
        ttl=3600.0,
        message_type=MessageType.TRAIN,
    )


def reply(content: RecordDict, node_id: int, server_round: int = 1) -> Message:
    """A successful train reply from ``node_id`` carrying ``content``."""
    return Message(content, metadata=metadata(node_id, server_round))


def error_reply(node_id: int, reason: str, server_round: int = 1) -> Message:
    """A failed train reply (the ClientApp raised) from ``node_id``."""
    return Message(Error(code=0, reason=reason), metadata=metadata(node_id, server_round))


def train_content(arrays, site_index: int, num_examples: int = 100, **extra) -> RecordDict:
    """What ``client.app.handle_train`` replies: arrays + allow-listed metrics."""
    metrics = {keys.NUM_EXAMPLES: num_examples, keys.SITE_INDEX: site_index, keys.TRAIN_LOSS: 0.5}
    metrics.update(extra)
    return RecordDict({keys.ARRAYS: arrays, keys.METRICS: MetricRecord(metrics)})


class FakeGrid:
    """Just enough of a Grid for a strategy's ``configure_train``: the connected node ids."""

    def __init__(self, node_ids: list[int]) -> None:
        self.node_ids = node_ids

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)


def recording_strategy() -> tuple[GuardedStrategy, RoundRecorder, list[RoundRecord]]:
    """FedAvg inside ``GuardedStrategy`` reporting to a recorder; finished rounds in the list."""
    recorded: list[RoundRecord] = []
    recorder = RoundRecorder(listener=lambda record, arrays: recorded.append(record))
    strategy = GuardedStrategy(
        FedAvg(train_metrics_aggr_fn=recorder.aggregate_train),
        validation=ValidationConfig(),
        min_replies=1,
        on_participation=recorder.record_participation,
        on_declined=recorder.record_declined,
        on_evaluation_missed=recorder.record_evaluation_missed,
    )
    return strategy, recorder, recorded


@pytest.fixture
def task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let strategies build instruction messages outside a running ServerApp."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def write_pool(path: Path, labels: np.ndarray, size: int = 8, split: str = "train") -> Path:
    """A small MedMNIST-style npz: images encode their own index in the first pixel."""
    images = np.zeros((len(labels), size, size), dtype=np.uint8)
    images[:, 0, 0] = np.arange(len(labels)) % 256
    images[:, 1:, :] = (labels[:, None, None] * 200).astype(np.uint8)
    np.savez(path, **{f"{split}_images": images, f"{split}_labels": labels.reshape(-1, 1)})
    return path
