"""A moving average of the global model's iterates, kept by the server (``strategy.ema-decay``).

With decay ``d > 0`` the server folds the global model ``w_r`` of every round ``r`` into

    ema_1 = w_1,        ema_r = d * ema_(r-1) + (1 - d) * w_r

The sites go on training from ``w_r``; ``ema_r`` is the model that is *served*: sent to the
sites for evaluation, scored on the official splits (``server.public_eval``), given the
operating threshold and written to ``model.pt``. Averaging released iterates is
post-processing of what each round already released, so it spends no privacy budget, and it
damps the noise DP-SGD adds to every round (the "EMA of iterates" of De et al., 2022).

Only floating-point arrays are averaged; integer ones (BatchNorm's step counters) take the
latest iterate's value. The average travels in checkpoints next to the strategy's own state
(``ema/<array name>``), so a resumed run goes on with the same average. ``fold`` is
idempotent per round: the strategy (before the sites evaluate) and the recorder (after the
round) may both ask for round ``r``'s served model and get the same arrays.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord

STATE_GROUP = "ema"


class IterateAverage:
    """The served model of each round: the global model itself, or its moving average."""

    def __init__(self, decay: float, *, last_round: int = 0) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.last_round = last_round
        self._average: dict[str, np.ndarray] = {}

    @property
    def enabled(self) -> bool:
        """Whether a moving average is kept (decay > 0)."""
        return self.decay > 0

    def fold(self, server_round: int, arrays: ArrayRecord) -> ArrayRecord:
        """The served model after ``server_round`` whose global model is ``arrays``.

        The first call for a round folds ``arrays`` in; later calls for the same round return
        the same average without folding again.
        """
        if not self.enabled:
            return arrays
        if server_round > self.last_round or not self._average:
            current = {name: array.numpy() for name, array in arrays.items()}
            if not self._average:
                self._average = {name: value.copy() for name, value in current.items()}
            else:
                self._average = {
                    name: _mixed(self._average[name], value, self.decay)
                    for name, value in current.items()
                }
            self.last_round = max(self.last_round, server_round)
        return ArrayRecord({name: Array(value) for name, value in self._average.items()})

    # -- checkpoints -----------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        """The average as named arrays for a checkpoint (empty when off or not started)."""
        if not self.enabled:
            return {}
        return {f"{STATE_GROUP}/{name}": value for name, value in self._average.items()}

    def restore(self, state: dict[str, np.ndarray], last_round: int) -> None:
        """Take the average back from a checkpoint written after ``last_round``."""
        prefix = f"{STATE_GROUP}/"
        self._average = {
            key[len(prefix) :]: np.asarray(value)
            for key, value in state.items()
            if key.startswith(prefix)
        }
        self.last_round = last_round


def _mixed(average: np.ndarray, latest: np.ndarray, decay: float) -> np.ndarray:
    """``decay * average + (1 - decay) * latest`` in the arrays' own dtype (integers: latest)."""
    if not np.issubdtype(latest.dtype, np.floating):
        return latest.copy()
    mixed = decay * average.astype(np.float64) + (1.0 - decay) * latest.astype(np.float64)
    return mixed.astype(latest.dtype)
