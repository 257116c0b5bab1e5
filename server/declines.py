"""Sites that decline a round (privacy budget spent) are logged and left out of aggregation.

A declining site replies normally (no error) with ``train-status`` =
``STATUS_DECLINED_BUDGET``, zero examples and the global model unchanged. Averaging such a
reply would be harmless for FedAvg (weight 0) but not for robust strategies that ignore the
weights, and a round in which every site declines would divide by zero. ``SkipDeclined``
wraps any Flower strategy (it is itself a ``Strategy``, so Flower's ``start`` loop drives
it) and hands only the trained replies to the wrapped strategy's ``aggregate_train``; when
no site trained, the global model is kept. ``split_declined`` is the pure part, for other
wrappers to reuse.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from common import keys
from common.data.synthetic import site_name

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


class SkipDeclined(Strategy):
    """Delegate to ``inner``, leaving declined replies out of training aggregation."""

    def __init__(self, inner: Strategy, on_declined: DeclineListener | None = None) -> None:
        self.inner = inner
        self.on_declined = on_declined

    def summary(self) -> None:
        """Log the wrapped strategy's settings."""
        self.inner.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """The wrapped strategy samples the sites."""
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Log declines, then aggregate the rest (or keep the model if none trained)."""
        kept, declined = split_declined(replies)
        for message in declined:
            metrics = next(iter(message.content.metric_records.values()))
            LOG.warning(
                "round %d: %s declined to train: its privacy budget is spent (epsilon %.3g)",
                server_round,
                site_name(int(metrics.get(keys.SITE_INDEX, 0))),  # type: ignore[call-overload]
                float(metrics.get(keys.EPSILON, 0.0)),  # type: ignore[arg-type]
            )
        if self.on_declined is not None:
            self.on_declined(server_round, [m.content for m in declined])
        if not kept:
            LOG.warning("round %d: no site trained; the global model is kept", server_round)
            return None, None
        return self.inner.aggregate_train(server_round, kept)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """The wrapped strategy samples the sites."""
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Evaluation is unaffected by declines."""
        return self.inner.aggregate_evaluate(server_round, replies)
