"""Server learning-rate schedules (``strategy.server-lr-schedule``), applied round by round.

Flower's FedAvgM (``server_learning_rate``) and FedAdam / FedYogi (``eta``) read their server
learning rate when they aggregate; ``ServerLrSchedule`` sets it before each round's
aggregation from the round number alone, so a resumed run continues the same schedule.
A schedule is server-side post-processing of the sites' (noised) updates: no privacy cost.

- ``constant``: ``strategy.server-lr`` every round (Flower's behaviour);
- ``cosine``: ``server-lr * (1 + cos(pi * (r - 1) / R)) / 2`` in round ``r`` of ``R =
  federation.num-rounds`` (``common.lr_schedules``, which the sites' ``train.lr-schedule``
  shares): the full rate in round 1, decaying smoothly towards 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from flwr.serverapp.strategy import FedAvg, FedAvgM
from flwr.serverapp.strategy.fedopt import FedOpt

from common.config import MedfedConfig
from common.lr_schedules import schedule_factor


@dataclass(frozen=True)
class ServerLrSchedule:
    """The server learning rate of every round of a run."""

    base: float
    kind: str  # common.lr_schedules.LR_SCHEDULES
    num_rounds: int

    @classmethod
    def of(cls, config: MedfedConfig) -> ServerLrSchedule:
        strategy = config.strategy
        return cls(strategy.server_lr, strategy.server_lr_schedule, config.federation.num_rounds)

    def at(self, server_round: int) -> float:
        """The server learning rate of round ``server_round`` (1-based)."""
        return self.base * schedule_factor(self.kind, server_round, self.num_rounds)

    def apply(self, strategy: FedAvg, server_round: int) -> None:
        """Set ``strategy``'s server learning rate for the round it is about to aggregate."""
        rate = self.at(server_round)
        if isinstance(strategy, FedAvgM):
            strategy.server_learning_rate = rate
            strategy.server_opt = True  # Flower skips its server step at rate 1, momentum 0
        elif isinstance(strategy, FedOpt):
            strategy.eta = rate
