"""Sites that decline a round (privacy budget spent) are logged and left out of aggregation.

A declining site replies normally (no error) with ``train-status`` =
``STATUS_DECLINED_BUDGET``, zero examples and the global model unchanged. Averaging such a
reply would be harmless for FedAvg (weight 0) but not for robust strategies that ignore the
weights, and a round in which every site declines would divide by zero. ``GuardedStrategy``
(``server.guarded``) therefore splits declined replies off with ``split_declined`` before it
validates and aggregates, and reports them with ``report_declined``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from flwr.app import Message, RecordDict

from common import keys
from common.naming import site_name

LOG = logging.getLogger("medfed.server")

DeclineListener = Callable[[int, list[RecordDict]], None]


def is_declined(content: RecordDict) -> bool:
    """True for a reply whose site declined to train."""
    for record in content.metric_records.values():
        status = record.get(keys.TRAIN_STATUS, keys.STATUS_TRAINED)
        return int(status) == keys.STATUS_DECLINED_BUDGET  # type: ignore[call-overload]
    return False


def split_declined(replies: Iterable[Message]) -> tuple[list[Message], list[Message]]:
    """(replies to aggregate, declined replies); error replies stay with the first."""
    kept, declined = [], []
    for message in replies:
        if not message.has_error() and is_declined(message.content):
            declined.append(message)
        else:
            kept.append(message)
    return kept, declined


def report_declined(
    server_round: int, declined: list[Message], listener: DeclineListener | None
) -> None:
    """Log each declining site (name and spent epsilon) and tell ``listener`` about them."""
    for message in declined:
        metrics = next(iter(message.content.metric_records.values()))
        LOG.warning(
            "round %d: %s declined to train: its privacy budget is spent (epsilon %.3g)",
            server_round,
            site_name(int(metrics.get(keys.SITE_INDEX, 0))),  # type: ignore[call-overload]
            float(metrics.get(keys.EPSILON, 0.0)),  # type: ignore[arg-type]
        )
    if listener is not None:
        listener(server_round, [m.content for m in declined])
