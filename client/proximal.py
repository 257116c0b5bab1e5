"""FedProx's proximal term ``mu/2 * ||w - w_global||^2`` for a site's local objective.

Without DP the term is added to the loss before ``backward()``. Under DP-SGD, Opacus builds
the update from per-sample gradients captured by its layer hooks, and a term that depends
only on the weights never passes through them: its gradient would be silently dropped. So
under DP the term's exact gradient ``mu * (w - w_global)`` is added to the noised gradient
through ``DPOptimizer.attach_step_hook`` (after clipping and noise, before the SGD step),
next to Opacus' own accounting hook. It uses no data, so it costs no privacy.
"""

from __future__ import annotations

import torch
from opacus.optimizers import DPOptimizer
from torch import nn


class ProximalTerm:
    """The proximal term anchored at the global weights received this round."""

    def __init__(self, model: nn.Module, mu: float) -> None:
        self.mu = float(mu)
        self._params = [p for p in model.parameters() if p.requires_grad]
        self._anchor = [p.detach().clone() for p in self._params]

    def penalty(self) -> torch.Tensor:
        """``mu/2 * ||w - w_global||^2`` as a differentiable scalar."""
        total = sum(((p - a) ** 2).sum() for p, a in zip(self._params, self._anchor, strict=True))
        return 0.5 * self.mu * total  # type: ignore[return-value]

    @torch.no_grad()
    def add_gradient(self) -> None:
        """Add ``mu * (w - w_global)`` to each parameter's current gradient."""
        for param, anchor in zip(self._params, self._anchor, strict=True):
            if param.grad is not None:
                param.grad.add_(param - anchor, alpha=self.mu)

    def attach(self, optimizer: DPOptimizer) -> None:
        """Run :meth:`add_gradient` inside Opacus' step, keeping its existing step hook."""
        previous = optimizer.step_hook

        def hook(dp_optimizer: DPOptimizer) -> None:
            if previous is not None:
                previous(dp_optimizer)
            self.add_gradient()

        optimizer.attach_step_hook(hook)
