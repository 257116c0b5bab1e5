"""Drive the real ClientApp in-process, the way a SuperNode would, and capture its replies."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp
from flwr.supercore.task_identity import TaskIdentity

from client.app import build_client_app
from common import keys
from common.config import MedfedConfig
from common.models import build_run_model
from common.params import model_to_arrays
from common.round_settings import encode_round_settings


@dataclass
class CapturingHarness:
    """A ClientApp wrapped in a mod that records every reply leaving the client."""

    site_path: Path
    config: MedfedConfig
    state_dir: Path | None = None  # default: beside the config's (per-test) synthetic root
    node_extras: dict[str, str | float] = field(default_factory=dict)  # e.g. epsilon-budget
    run_id: int = 1
    sent: list[Message] = field(default_factory=list)
    context: Context = field(init=False)
    app: ClientApp = field(init=False)

    def __post_init__(self) -> None:
        def capture(msg: Message, context: Context, call_next) -> Message:  # type: ignore[no-untyped-def]
            reply = call_next(msg, context)
            self.sent.append(reply)
            return reply

        self.app = build_client_app(mods=[capture])
        # Flower's runtime sets the sender identity before a ServerApp builds messages.
        TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, self.run_id, 0
        if self.state_dir is None:
            self.state_dir = Path(self.config.data.synthetic_root).parent / "site-state"
        self.context = Context(
            run_id=self.run_id,
            node_id=7,
            node_config={
                keys.NODE_DATA_PATH: str(self.site_path),
                keys.NODE_PARTITION_ID: 0,
                keys.NODE_STATE_DIR: str(self.state_dir),
                **self.node_extras,
            },
            state=RecordDict(),
            run_config={},
        )

    def global_model(self) -> torch.nn.Module:
        torch.manual_seed(0)
        return build_run_model(self.config, self.config.data.channels)

    def send(self, message_type: str, server_round: int = 1, *, check: bool = True) -> Message:
        """Send one instruction; ``check``: fail the test if the reply is an error."""
        settings = ConfigRecord(
            {
                **encode_round_settings(self.config, str(self.run_id)),
                keys.SERVER_ROUND: server_round,
            }
        )
        content = RecordDict(
            {keys.ARRAYS: model_to_arrays(self.global_model()), keys.CONFIG: settings}
        )
        message = Message(content=content, dst_node_id=7, message_type=message_type)
        reply = self.app(message, self.context)
        if check:
            assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
        return reply

    def train(self, server_round: int = 1) -> Message:
        return self.send(MessageType.TRAIN, server_round)

    def evaluate(self, server_round: int = 1) -> Message:
        return self.send(MessageType.EVALUATE, server_round)
