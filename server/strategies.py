"""Strategy factory: one place mapping a configured name to a Flower strategy."""

from __future__ import annotations

from flwr.serverapp.strategy import FedAvg, Strategy

from common.config import FederationConfig
from server.declines import SkipDeclined
from server.recorder import RoundRecorder


def build_strategy(federation: FederationConfig, recorder: RoundRecorder) -> Strategy:
    """Flower's FedAvg, with medfed's metric aggregation (epsilon as a max, pooled AUC).

    Wrapped in ``SkipDeclined``: sites that decline a round (privacy budget) are logged and
    left out of aggregation.
    """
    inner = FedAvg(
        fraction_train=federation.fraction_train,
        fraction_evaluate=federation.fraction_evaluate,
        min_train_nodes=federation.min_sites,
        min_evaluate_nodes=federation.min_sites,
        min_available_nodes=federation.min_sites,
        train_metrics_aggr_fn=recorder.aggregate_train,
        evaluate_metrics_aggr_fn=recorder.aggregate_evaluate,
    )
    return SkipDeclined(inner, on_declined=recorder.record_declined)
