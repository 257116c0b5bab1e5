"""Evaluate a model on a site's held-out split (scores never leave this function)."""

from __future__ import annotations

import torch
from torch import nn

from common.data.preprocess import normalise
from common.metrics import BinaryMetrics, binary_metrics


@torch.no_grad()
def evaluate_model(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256
) -> BinaryMetrics:
    """Loss, accuracy, AUC and confusion counts of ``model`` on images in [0, 1]."""
    model.eval()
    criterion = nn.CrossEntropyLoss(reduction="sum")
    total_loss = 0.0
    scores = []
    for start in range(0, len(labels), batch_size):
        logits = model(normalise(images[start : start + batch_size]))
        total_loss += float(criterion(logits, labels[start : start + batch_size]))
        scores.append(torch.softmax(logits, dim=1)[:, 1])
    all_scores = torch.cat(scores).numpy() if scores else torch.empty(0).numpy()
    return binary_metrics(labels.numpy(), all_scores, total_loss / max(len(labels), 1))
