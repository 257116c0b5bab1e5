"""Sites that decline a round because their privacy budget is spent.

A declining site replies normally (no error) with ``train-status`` =
``STATUS_DECLINED_BUDGET``, zero examples and the global model unchanged. Averaging such a
reply would be harmless for FedAvg (weight 0) but not for robust strategies that ignore the
weights, and a round in which every site declines would divide by zero: ``GuardedStrategy``
uses :func:`is_declined` to log those replies and leave them out of validation and
aggregation, and the round recorder lists them as ``declined_sites``.
"""

from __future__ import annotations

from flwr.app import RecordDict

from common import keys


def is_declined(content: RecordDict) -> bool:
    """True for a train reply whose site declined to train."""
    for record in content.metric_records.values():
        status = record.get(keys.TRAIN_STATUS, keys.STATUS_TRAINED)
        return int(status) == keys.STATUS_DECLINED_BUDGET  # type: ignore[call-overload]
    return False
