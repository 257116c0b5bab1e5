"""Fault injection for simulations and tests: a broken or hostile hospital, as client mods.

``corrupt_updates_mod(site, plan)`` lets site ``site`` train normally and then corrupts its
reply in the rounds named in ``plan``:
- ``nan``: one array filled with NaN;
- ``shape``: one array with an extra row (wrong shape);
- ``scale``: the update (reply minus the global model it received) multiplied by 1000;
- ``flip``: the update's sign flipped (the model moves the other way).
``fail_site_mod(site, rounds)`` makes the site raise in those rounds (a crashed or offline
hospital). Both are Flower client mods, so the faults travel through Flower's real messages.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable, Mod

from common import keys

ATTACKS = ("nan", "shape", "scale", "flip")


class SimulatedFailure(RuntimeError):
    """Raised by a site told to fail this round."""


def _round_and_site(msg: Message, context: Context) -> tuple[int, int]:
    config = msg.content.config_records.get(keys.CONFIG)
    server_round = int(config.get(keys.SERVER_ROUND, 0)) if config else 0  # type: ignore[call-overload]
    site = int(context.node_config.get(keys.NODE_PARTITION_ID, -1))  # type: ignore[call-overload]
    return server_round, site


def corrupt(reply: ArrayRecord, sent: ArrayRecord, attack: str) -> ArrayRecord:
    """The reply's arrays after ``attack`` (relative to the global arrays ``sent``)."""
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack '{attack}' (known: {', '.join(ATTACKS)})")
    values = {name: array.numpy().copy() for name, array in reply.items()}
    first = next(iter(values))
    if attack == "nan":
        values[first] = np.full_like(values[first], np.nan)
    elif attack == "shape":
        values[first] = np.concatenate([values[first], values[first][:1]], axis=0)
    else:
        factor = 1000.0 if attack == "scale" else -1.0
        for name, value in values.items():
            start = sent[name].numpy()
            values[name] = (start + factor * (value - start)).astype(value.dtype)
    return ArrayRecord({name: Array(value) for name, value in values.items()})


def corrupt_updates_mod(site: int, plan: Mapping[int, str]) -> Mod:
    """Corrupt ``site``'s training reply in each round of ``plan`` (round -> attack)."""

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        reply = call_next(msg, context)
        server_round, this_site = _round_and_site(msg, context)
        attack = plan.get(server_round)
        if (
            this_site != site
            or attack is None
            or msg.metadata.message_type != MessageType.TRAIN
            or reply.has_error()
        ):
            return reply
        reply.content[keys.ARRAYS] = corrupt(
            reply.content.array_records[keys.ARRAYS], msg.content.array_records[keys.ARRAYS], attack
        )
        return reply

    return mod


def fail_site_mod(site: int, rounds: Collection[int]) -> Mod:
    """Make ``site`` raise (train and evaluate) in ``rounds``."""

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        server_round, this_site = _round_and_site(msg, context)
        if this_site == site and server_round in rounds:
            raise SimulatedFailure(f"simulated failure of site {site} in round {server_round}")
        return call_next(msg, context)

    return mod
