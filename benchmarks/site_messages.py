"""Send one round's train and evaluate instructions to a ClientApp, as a SuperNode would.

Shared by the benchmarks that drive the real ClientApp in-process (``site_round.py``,
``client_memory.py``): the round settings the ServerApp would send, the global model, one
message per site and kind; a reply that is an error stops the benchmark.
"""

from __future__ import annotations

from collections.abc import Sequence

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp

from common import keys
from common.config import MedfedConfig
from common.round_settings import encode_round_settings


def play_round(
    app: ClientApp,
    config: MedfedConfig,
    contexts: Sequence[Context],
    arrays: ArrayRecord,
    run_key: str,
    server_round: int,
) -> None:
    """Train every site of ``contexts`` on ``arrays``, then evaluate every site."""
    settings = ConfigRecord(
        {**encode_round_settings(config, run_key), keys.SERVER_ROUND: server_round}
    )
    for kind in (MessageType.TRAIN, MessageType.EVALUATE):
        for context in contexts:
            content = RecordDict({keys.ARRAYS: arrays, keys.CONFIG: settings})
            message = Message(content=content, dst_node_id=context.node_id, message_type=kind)
            reply = app(message, context)
            if reply.has_error():
                raise SystemExit(f"round {server_round}: {reply.error.reason}")
