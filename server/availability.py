"""Waiting for sites with a deadline: sampling never blocks a federation for ever.

Flower's own sampling (``flwr.serverapp.strategy.strategy_utils.sample_nodes``, and the
legacy ``ClientManager.wait_for`` under SecAgg+) waits until ``min-available`` nodes are
connected, with no deadline: one hospital that loses power would freeze every other. Here
each phase first waits at most ``federation.wait-timeout`` seconds for ``min-available``
sites (``Availability.wait``), then goes on with the sites that are online:

- training needs ``federation.min-sites`` of them, else the run stops (``RunStopped``) after
  its last completed round, whose checkpoint makes it resumable;
- evaluation runs with whoever is online (evaluating fewer sites exposes nothing that a
  site's own metrics do not), and does not wait again in a round whose training already did.

The strategies then sample from that fixed list (``FixedNodes``), so Flower's loop, whose
own wait would otherwise start again, finds its minimum already met.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from flwr.common.constant import ErrorCode

LOG = logging.getLogger("medfed.server")

# why a phase's reply is missing, by the error code the SuperLink gives it
_LOST = {
    ErrorCode.NODE_UNAVAILABLE: "lost contact with the site (no heartbeat)",
    ErrorCode.REPLY_MESSAGE_UNAVAILABLE: "no reply before the round timeout",
    ErrorCode.MESSAGE_UNAVAILABLE: "instruction expired before the site fetched it",
}


class RunStopped(RuntimeError):
    """Too few sites online to train: the run ends after its last completed round."""


def lost_reason(code: int) -> str | None:
    """A plain reason for a reply the SuperLink made up for a site (``None``: the site's own)."""
    return _LOST.get(code)


@dataclass(frozen=True)
class Availability:
    """How long, and for how many sites, a phase waits before sampling."""

    wanted: int  # federation.min-available (at least min-sites)
    needed: int  # federation.min-sites: fewer online and training cannot happen
    timeout: float  # federation.wait-timeout, seconds
    poll: float = 1.0
    log_every: float = 30.0

    def wait(
        self, online: Callable[[], Sequence[int]], *, what: str, patient: bool = True
    ) -> list[int]:
        """The node ids online once ``wanted`` are, or when the wait's deadline passes.

        ``patient=False`` takes whoever is online now (a round's evaluation after its
        training already waited out the deadline).
        """
        deadline = time.monotonic() + (self.timeout if patient else 0.0)
        next_log = time.monotonic()
        while True:
            nodes = list(online())
            now = time.monotonic()
            if len(nodes) >= self.wanted or now >= deadline:
                if len(nodes) < self.wanted:
                    LOG.warning(
                        "%s: %d of %d sites online after waiting %.0f s (federation.wait-timeout)",
                        what,
                        len(nodes),
                        self.wanted,
                        self.timeout if patient else 0.0,
                    )
                return nodes
            if now >= next_log:
                LOG.info(
                    "%s: waiting for sites: %d of %d online (at most %.0f s more)",
                    what,
                    len(nodes),
                    self.wanted,
                    deadline - now,
                )
                next_log = now + self.log_every
            time.sleep(max(0.0, min(self.poll, deadline - now)))


class FixedNodes:
    """A grid whose connected nodes are the ones a bounded wait found (everything else is
    the real grid's): Flower's sampler then samples them without waiting again."""

    def __init__(self, grid: object, nodes: Sequence[int]) -> None:
        self._grid = grid
        self._nodes = list(nodes)

    def get_node_ids(self) -> list[int]:
        """The node ids found online."""
        return list(self._nodes)

    def __getattr__(self, name: str) -> object:
        return getattr(self._grid, name)


_MINIMUMS = (
    "min_available_nodes",  # flwr.serverapp strategies
    "min_train_nodes",
    "min_evaluate_nodes",
    "min_available_clients",  # legacy flwr.server strategies (SecAgg+)
    "min_fit_clients",
    "min_evaluate_clients",
)


@contextmanager
def minimums_at_most(strategy: object, count: int) -> Iterator[None]:
    """Cap a Flower strategy's sampling minimums at ``count`` for one sampling call."""
    saved = {name: getattr(strategy, name) for name in _MINIMUMS if hasattr(strategy, name)}
    try:
        for name, value in saved.items():
            setattr(strategy, name, min(int(value), max(count, 0)))
        yield
    finally:
        for name, value in saved.items():
            setattr(strategy, name, value)
