"""Learning-rate schedules over a run's rounds, shared by the server and the sites.

``constant``: the base rate every round. ``cosine``: ``base * (1 + cos(pi * (r - 1) / R)) / 2``
in round ``r`` of ``R`` planned rounds: the full rate in round 1, decaying smoothly towards 0
(never reaching it). The factor depends on the round number and the planned count alone, so a
resumed run continues the same schedule, and a run with a decaying schedule cannot be extended
(``server.checkpoint.extended_rounds``).

The server applies it to its own learning rate (``strategy.server-lr-schedule``,
``server.lr_schedule``); each site to its local SGD learning rate (``train.lr-schedule``):
with a constant rate FedAvg on sites whose data differ settles in a neighbourhood of a
solution that depends on how far their local optima lie apart; a decaying local rate shrinks
that drift as the run ends (Li et al., "On the convergence of FedAvg on non-IID data", 2020).
"""

from __future__ import annotations

import math
from typing import Literal, get_args

LrSchedule = Literal["constant", "cosine"]
LR_SCHEDULES: tuple[str, ...] = get_args(LrSchedule)


def schedule_factor(kind: str, server_round: int, num_rounds: int) -> float:
    """The fraction of the base learning rate that round ``server_round`` (1-based) uses."""
    if kind == "cosine":
        progress = min(max(server_round - 1, 0), num_rounds) / max(num_rounds, 1)
        return (1 + math.cos(math.pi * progress)) / 2
    return 1.0
