"""Mixup for training without DP (``train.mixup``; Zhang et al., ICLR 2018).

Each batch trains on its inputs blended pairwise with a shuffled copy of the batch,
``lam * x + (1 - lam) * x[perm]``, one weight ``lam ~ Beta(alpha, alpha)`` per batch, and on
the loss blended alike, ``lam * loss(y) + (1 - lam) * loss(y[perm])``. It smooths the model
between training examples, a regulariser for small data sets. A blended example carries two
patients' images, so the config refuses it under DP-SGD (its per-record bound would not
hold). Weights and partners come from torch's global generator, which the site seeds per
round, so a resumed round draws the same ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MixedBatch:
    """A batch blended with a shuffled copy of itself, and how to blend its loss."""

    inputs: list[torch.Tensor]
    labels: torch.Tensor
    partner_labels: torch.Tensor
    weight: float  # lam: the share of each example's own image and label

    def loss(
        self, criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], logits: torch.Tensor
    ) -> torch.Tensor:
        """The blended loss: ``lam * loss(labels) + (1 - lam) * loss(partner labels)``."""
        own = criterion(logits, self.labels)
        return self.weight * own + (1 - self.weight) * criterion(logits, self.partner_labels)


def mix_batch(inputs: Sequence[torch.Tensor], labels: torch.Tensor, alpha: float) -> MixedBatch:
    """Blend every input tensor (images; clinical features of a fusion model) of the batch
    with the same shuffled copy, by one weight drawn from ``Beta(alpha, alpha)``."""
    if alpha <= 0:
        raise ValueError("alpha must be positive")
    concentration = torch.tensor(float(alpha))
    weight = float(torch.distributions.Beta(concentration, concentration).sample())
    partners = torch.randperm(len(labels))
    mixed = [weight * x + (1 - weight) * x[partners] for x in inputs]
    return MixedBatch(mixed, labels, labels[partners], weight)
