"""A ClientApp mod that frees each round's reference cycles before the next message arrives.

A DP round builds an Opacus ``GradSampleModule``, its hooks and optimizer around a fresh model;
they refer to each other, so when the round ends they are freed only by Python's full
(generation 2) collection, which a process holding ~400k long-lived objects (torch, Flower,
Opacus) seldom runs. Until it does, the tensors they hold stay resident: a process playing
the five sites of a Pneumonia DP round grew by ~29 MiB a round (718 → 1,300 MiB over 20
rounds; BENCHMARKS.md, session 12), a simulated site's Ray worker to ~2.5 GB over 120 rounds.
Collecting once after every reply keeps it flat. The reply is already built: nothing of it is
touched.
"""

from __future__ import annotations

import gc

from flwr.app import Context, Message
from flwr.clientapp.typing import ClientAppCallable


def collect_round_garbage(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Run the handler, then a full collection (the round's cycles go now, not rounds later)."""
    reply = call_next(msg, context)
    gc.collect()
    return reply
