"""Strategy factory: one place mapping a configured name to a Flower strategy.

Every strategy is Flower's own class (``flwr.serverapp.strategy``), built with medfed's
metric hooks (``RoundRecorder``: epsilon as a max, pooled AUC) and wrapped in
``GuardedStrategy`` (update validation, dropouts, resume). FedProx needs the clients' help:
Flower puts ``proximal-mu`` in the train ConfigRecord and ``client.train`` adds the proximal
term to the local loss.

``strategy_state`` / ``load_strategy_state`` move the server-side optimiser state (FedAdam /
FedYogi moments, FedAvgM momentum) in and out of checkpoints as named numpy arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.serverapp.strategy import (
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    MultiKrum,
)
from flwr.serverapp.strategy.fedopt import FedOpt

from common.config import MedfedConfig, StrategyConfig
from server.availability import Availability
from server.guarded import GuardedStrategy
from server.iterate_average import IterateAverage
from server.lr_schedule import ServerLrSchedule
from server.recorder import RoundRecorder

StrategyBuilder = Callable[[StrategyConfig, dict[str, Any]], FedAvg]


def _multikrum(config: StrategyConfig, common: dict[str, Any]) -> FedAvg:
    return MultiKrum(
        **common,
        num_malicious_nodes=config.num_malicious,
        num_nodes_to_select=config.num_selected or 0,
    )


STRATEGY_REGISTRY: dict[str, StrategyBuilder] = {
    "fedavg": lambda config, common: FedAvg(**common),
    "fedprox": lambda config, common: FedProx(**common, proximal_mu=config.proximal_mu),
    "fedavgm": lambda config, common: FedAvgM(
        **common,
        server_learning_rate=config.server_lr,
        server_momentum=config.server_momentum,
    ),
    "fedadam": lambda config, common: FedAdam(
        **common,
        eta=config.server_lr,
        beta_1=config.server_momentum,
        beta_2=config.beta_2,
        tau=config.tau,
    ),
    "fedyogi": lambda config, common: FedYogi(
        **common,
        eta=config.server_lr,
        beta_1=config.server_momentum,
        beta_2=config.beta_2,
        tau=config.tau,
    ),
    "fedmedian": lambda config, common: FedMedian(**common),
    "fedtrimmedavg": lambda config, common: FedTrimmedAvg(**common, beta=config.trim_beta),
    "krum": lambda config, common: Krum(**common, num_malicious_nodes=config.num_malicious),
    "multikrum": _multikrum,
}

STRATEGY_DESCRIPTIONS: dict[str, str] = {
    "fedavg": "example-weighted mean of the site models",
    "fedprox": "FedAvg + proximal term mu/2 ||w - w_global||^2 in each site's local loss",
    "fedavgm": "FedAvg + server momentum (server-lr, server-momentum)",
    "fedadam": "server-side Adam on the averaged update (server-lr, betas, tau)",
    "fedyogi": "server-side Yogi on the averaged update (server-lr, betas, tau)",
    "fedmedian": "coordinate-wise median of the site models (robust)",
    "fedtrimmedavg": "coordinate-wise mean after cutting trim-beta from each tail (robust)",
    "krum": "the one site model closest to its neighbours (robust to num-malicious)",
    "multikrum": "mean of the num-selected site models with the best Krum scores (robust)",
}


def build_strategy(
    config: MedfedConfig,
    recorder: RoundRecorder,
    node_sites: dict[int, str] | None = None,
    average: IterateAverage | None = None,
) -> GuardedStrategy:
    """The configured Flower strategy with medfed's hooks, wrapped in ``GuardedStrategy``
    (``node_sites``: the run's node id -> site name map, kept across a resume; ``average``:
    the served model's moving average, shared with the recorder, when ``strategy.ema-decay``
    > 0)."""
    name = config.strategy.name  # checked by StrategyConfig (common.config.STRATEGY_NAMES)
    builder = STRATEGY_REGISTRY[name]
    federation = config.federation
    common: dict[str, Any] = {
        "fraction_train": federation.fraction_train,
        "fraction_evaluate": federation.fraction_evaluate,
        "min_train_nodes": federation.min_sites,
        "min_evaluate_nodes": federation.min_sites,
        "min_available_nodes": max(federation.min_sites, federation.min_available),
        "train_metrics_aggr_fn": recorder.aggregate_train,
        "evaluate_metrics_aggr_fn": recorder.aggregate_evaluate,
    }
    if name == "multikrum" and not config.strategy.num_selected:
        config = config.replace(**{"strategy.num-selected": _default_selected(config)})
    return GuardedStrategy(
        builder(config.strategy, common),
        validation=config.validation,
        min_replies=federation.min_sites,
        on_participation=recorder.record_participation,
        on_declined=recorder.record_declined,
        availability=availability_of(config),
        on_evaluation_missed=recorder.record_evaluation_missed,
        node_sites=node_sites,
        average=average,
        max_failed_rounds=federation.max_failed_rounds,
        server_lr=(
            ServerLrSchedule.of(config)
            if config.strategy.server_lr_schedule != "constant"
            else None
        ),
    )


def availability_of(config: MedfedConfig) -> Availability:
    """How long and for how many sites each phase waits before sampling."""
    federation = config.federation
    return Availability(
        wanted=max(federation.min_sites, federation.min_available),
        needed=federation.min_sites,
        timeout=federation.wait_timeout,
    )


def _default_selected(config: MedfedConfig) -> int:
    sampled = max(
        config.federation.min_sites,
        int(config.federation.num_sites * config.federation.fraction_train),
    )
    return max(1, sampled - config.strategy.num_malicious)


# -- server-side optimiser state for checkpoints -------------------------------------------
def strategy_state(strategy: FedAvg) -> dict[str, np.ndarray]:
    """The wrapped strategy's evolving state as named arrays (empty for stateless ones)."""
    state: dict[str, np.ndarray] = {}
    if isinstance(strategy, FedOpt):
        for moment in ("m_t", "v_t"):
            for name, value in (getattr(strategy, moment) or {}).items():
                state[f"{moment}/{name}"] = np.asarray(value)
    if isinstance(strategy, FedAvgM) and strategy.momentum_vector is not None:
        for index, value in enumerate(strategy.momentum_vector):
            state[f"momentum_vector/{index:05d}"] = np.asarray(value)
    return state


def load_strategy_state(strategy: FedAvg, state: dict[str, np.ndarray]) -> None:
    """Put state saved by :func:`strategy_state` back into a freshly built strategy."""
    grouped: dict[str, dict[str, np.ndarray]] = {}
    for key, value in state.items():
        group, _, name = key.partition("/")
        grouped.setdefault(group, {})[name] = value
    if isinstance(strategy, FedOpt):
        for moment in ("m_t", "v_t"):
            if moment in grouped:
                setattr(strategy, moment, dict(grouped[moment]))
    if isinstance(strategy, FedAvgM) and "momentum_vector" in grouped:
        vector = grouped["momentum_vector"]
        strategy.momentum_vector = [vector[name] for name in sorted(vector)]
