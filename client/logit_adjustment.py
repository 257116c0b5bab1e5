"""The site's label mix taken out of its training loss (``train.logit-adjustment``; no DP only).

Under label skew (a Dirichlet split: one hospital sees mostly malignant cases, another
mostly benign) each site's local training pulls the model's class biases towards its own
label mix, and FedAvg averages models that disagree for that reason. The logit-adjusted loss
(Menon et al., ICLR 2021; "balanced softmax", Ren et al., NeurIPS 2020; used against label
skew in federated learning, e.g. Zhang et al., ICML 2022) trains on
``cross_entropy(logits + tau * log(prior), label)``, ``prior`` the site's own class
frequencies: the prior is added by the loss, so the model does not have to learn it, and
what it learns is closer to what every site shares. The global model predicts with its
logits as they are (evaluation and ``medfed predict`` are unchanged).

The prior is counted on the site's training shard, in the site's process, and is never sent.
It makes every example's loss depend on the other examples' labels, so DP-SGD's per-record
bound would not hold: the config refuses it under DP (``common.config``). A class the site
has no example of counts as one example (add-one smoothing), so its log prior is finite.
"""

from __future__ import annotations

import torch
from torch import nn


class LogitAdjustedLoss(nn.Module):
    """Cross-entropy on ``logits + strength * log(prior)``, the prior from ``labels``."""

    def __init__(self, labels: torch.Tensor, strength: float, label_smoothing: float = 0.0):
        super().__init__()
        if strength <= 0:
            raise ValueError("strength must be positive")
        self.strength = strength
        self.label_smoothing = label_smoothing
        self.register_buffer("counts", torch.bincount(labels.reshape(-1).long()).float())

    def log_prior(self, num_classes: int) -> torch.Tensor:
        """log of the add-one-smoothed class frequencies, for ``num_classes`` classes."""
        counts = torch.zeros(num_classes, device=self.counts.device)
        counts[: len(self.counts)] = self.counts[:num_classes]
        smoothed = counts + 1
        return torch.log(smoothed / smoothed.sum())

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        shift = self.strength * self.log_prior(logits.shape[-1]).to(logits.dtype)
        return nn.functional.cross_entropy(
            logits + shift, targets, label_smoothing=self.label_smoothing
        )
