"""Simulated dropouts: a Flower client mod that makes sampled sites fail some rounds.

Whether site ``k`` drops out of round ``r`` is drawn from ``(seed, k, r)``, so a scenario's
dropouts are the same on every run and after a resume. A dropped site raises in both the
train and the evaluate step of that round by answering with an error reply (no exception,
so no traceback in the operator's console); the server carries on with the sites that
answered and names the dropped ones in the round's line.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Context, Error, Message
from flwr.clientapp.typing import ClientAppCallable, Mod

from common import keys

DROPOUT_ERROR_CODE = 0


def drops_out(rate: float, seed: int, site: int, server_round: int) -> bool:
    """Whether ``site`` is offline in ``server_round`` (deterministic)."""
    return rate > 0 and float(np.random.default_rng([seed, site, server_round, 13]).random()) < rate


def dropout_mod(rate: float, seed: int) -> Mod:
    """A mod failing each site's round with probability ``rate``."""

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        config = msg.content.config_records.get(keys.CONFIG)
        server_round = int(config.get(keys.SERVER_ROUND, 0)) if config else 0  # type: ignore[call-overload]
        site = int(context.node_config.get(keys.NODE_PARTITION_ID, 0))  # type: ignore[call-overload]
        if drops_out(rate, seed, site, server_round):
            reason = f"simulated dropout of site {site} in round {server_round}"
            return Message(Error(code=DROPOUT_ERROR_CODE, reason=reason), reply_to=msg)
        return call_next(msg, context)

    return mod
