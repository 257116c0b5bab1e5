"""Evaluate a model on a site's held-out splits (scores never leave this module).

What leaves is the metrics of ``test`` and, per split, threshold-grid counts (``common.roc``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from common.data.preprocess import model_logits
from common.metrics import ClassificationMetrics, classification_metrics
from common.roc import SplitCounts, split_counts


@torch.no_grad()
def predict_scores(
    model: nn.Module,
    images: torch.Tensor,
    batch_size: int = 256,
    tabular: torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (N, K) and logits of ``model`` on images in [0, 1] (and, for a
    fusion model, the images' encoded clinical features ``tabular``)."""
    model.eval()
    extra = () if tabular is None else (tabular,)
    logits = [
        model_logits(
            model,
            images[start : start + batch_size],
            *(t[start : start + batch_size] for t in extra),
        )
        for start in range(0, len(images), batch_size)
    ]
    if not logits:
        return np.empty((0, 0)), np.empty((0, 0))
    stacked = torch.cat(logits)
    return torch.softmax(stacked, dim=1).numpy(), stacked.numpy()


def evaluate_model(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_classes: int = 2,
    threshold: float = 0.5,
    batch_size: int = 256,
    tabular: torch.Tensor | None = None,
) -> ClassificationMetrics:
    """Loss, confusion matrix, AUC (and all derived metrics) of ``model`` on a split."""
    return evaluate_split(
        model,
        images,
        labels,
        num_classes=num_classes,
        threshold=threshold,
        batch_size=batch_size,
        tabular=tabular,
    )[0]


def evaluate_split(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_classes: int = 2,
    threshold: float = 0.5,
    batch_size: int = 256,
    tabular: torch.Tensor | None = None,
) -> tuple[ClassificationMetrics, SplitCounts, np.ndarray]:
    """Metrics, threshold-grid counts and the class probabilities (N, K) of a split
    (``tabular``: the split's encoded clinical features, for a fusion model).

    The probabilities are for the site's own use (patient-group counts); never send them.
    """
    scores, logits = predict_scores(model, images, batch_size, tabular)
    if len(labels) == 0:
        scores = np.empty((0, num_classes))
        loss = float("nan")
    else:
        loss = float(
            nn.functional.cross_entropy(torch.from_numpy(logits), labels, reduction="mean")
        )
    metrics = classification_metrics(labels.numpy(), scores, loss, threshold)
    return metrics, split_counts(labels.numpy(), scores.reshape(len(labels), num_classes)), scores
