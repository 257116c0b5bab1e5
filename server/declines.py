"""Sites that decline a round are logged and left out of aggregation.

A declining site replies normally (no error) with zero examples, the global model unchanged
and ``train-status`` = ``STATUS_DECLINED_BUDGET`` (its privacy budget is spent) or
``STATUS_DECLINED_POLICY`` (the run breaks the site's privacy policy; the site keeps the
detailed reason in its own log, only the status crosses the wire). Averaging such a
reply would be harmless for FedAvg (weight 0) but not for robust strategies that ignore the
weights, and a round in which every site declines would divide by zero. ``GuardedStrategy``
(``server.guarded``) therefore splits declined replies off with ``split_declined`` before it
validates and aggregates, and reports them with ``report_declined``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from flwr.app import Message, MetricRecord, RecordDict

from common import keys
from common.keys import parse_not_approved
from common.naming import site_name

LOG = logging.getLogger("medfed.server")

DeclineListener = Callable[[int, list[RecordDict]], None]


# What the server calls each decline status (round line, logs, run directory).
DECLINE_REASONS = {
    keys.STATUS_DECLINED_BUDGET: "privacy budget",
    keys.STATUS_DECLINED_POLICY: "site policy",
    keys.STATUS_DECLINED_APP: "app not approved",
}


def decline_status(content: RecordDict) -> int | None:
    """The reply's decline status, or None for a reply whose site trained."""
    for record in content.metric_records.values():
        status = int(record.get(keys.TRAIN_STATUS, keys.STATUS_TRAINED))  # type: ignore[call-overload]
        return status if status in keys.DECLINED_STATUSES else None
    return None


def decline_reason(content: RecordDict) -> str:
    """Why the site declined, in the server's words ("privacy budget" / "site policy")."""
    status = decline_status(content)
    return DECLINE_REASONS.get(status, "declined") if status is not None else ""


def is_declined(content: RecordDict) -> bool:
    """True for a reply whose site declined to train (budget or policy)."""
    return decline_status(content) is not None


def _as_app_decline(message: Message) -> Message | None:
    """A gate's ``app not approved`` error reply as a decline reply (None for other errors)."""
    refused = parse_not_approved(message.error.reason) if message.has_error() else None
    if refused is None:
        return None
    fab_hash, index = refused
    LOG.warning(
        "%s refused the app: %s",
        site_name(index) if index is not None else f"node {message.metadata.src_node_id}",
        keys.not_approved_reason(fab_hash, None),
    )
    metrics = {keys.NUM_EXAMPLES: 0, keys.TRAIN_STATUS: keys.STATUS_DECLINED_APP}
    if index is not None:
        metrics[keys.SITE_INDEX] = index
    return Message(RecordDict({keys.METRICS: MetricRecord(metrics)}), reply_to=message)


def split_declined(replies: Iterable[Message]) -> tuple[list[Message], list[Message]]:
    """(replies to aggregate, declined replies); other error replies stay with the first.

    A site's gate refusing an unapproved app answers with an error reply; it is counted as
    that site declining (``app not approved``), not as a failure.
    """
    kept, declined = [], []
    for message in replies:
        app_decline = _as_app_decline(message)
        if app_decline is not None:
            declined.append(app_decline)
        elif not message.has_error() and is_declined(message.content):
            declined.append(message)
        else:
            kept.append(message)
    return kept, declined


def report_declined(
    server_round: int, declined: list[Message], listener: DeclineListener | None
) -> None:
    """Log each declining site (name, why, spent epsilon) and tell ``listener`` about them."""
    for message in declined:
        metrics = next(iter(message.content.metric_records.values()))
        site = site_name(int(metrics.get(keys.SITE_INDEX, 0)))  # type: ignore[call-overload]
        if decline_status(message.content) == keys.STATUS_DECLINED_APP:
            continue  # logged with its hash when it was recognised
        if decline_status(message.content) == keys.STATUS_DECLINED_POLICY:
            LOG.warning(
                "round %d: %s declined to train: site policy (the run breaks its privacy "
                "policy; the reason is in the site's log)",
                server_round,
                site,
            )
            continue
        LOG.warning(
            "round %d: %s declined to train: privacy budget (spent, epsilon %.3g)",
            server_round,
            site,
            float(metrics.get(keys.EPSILON, 0.0)),  # type: ignore[arg-type]
        )
    if listener is not None:
        listener(server_round, [m.content for m in declined])
