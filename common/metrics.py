"""Classification metrics (scikit-learn) for one site, and pooling across sites.

Pooling rules (the server never sees per-image scores):
- loss: example-weighted mean of site losses;
- accuracy: from the summed per-site confusion counts (exact);
- ROC-AUC: example-weighted mean of per-site AUCs; sites whose held-out split has a single
  class have no AUC and are left out. This is an approximation of the AUC of pooled scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import confusion_matrix, roc_auc_score


@dataclass(frozen=True)
class BinaryMetrics:
    """Metrics of one site's held-out split."""

    num_examples: int
    loss: float
    accuracy: float
    auc: float  # NaN when only one class is present
    tp: int
    fp: int
    tn: int
    fn: int


def binary_metrics(labels: np.ndarray, scores: np.ndarray, loss: float) -> BinaryMetrics:
    """Metrics for positive-class ``scores`` in [0, 1] at the 0.5 threshold."""
    predictions = (scores >= 0.5).astype(int)
    tn, fp, fn, tp = confusion_matrix(labels, predictions, labels=[0, 1]).ravel()
    auc = float(roc_auc_score(labels, scores)) if len(np.unique(labels)) == 2 else math.nan
    return BinaryMetrics(
        num_examples=len(labels),
        loss=loss,
        accuracy=float((tp + tn) / max(len(labels), 1)),
        auc=auc,
        tp=int(tp),
        fp=int(fp),
        tn=int(tn),
        fn=int(fn),
    )


def pool(sites: Sequence[BinaryMetrics]) -> BinaryMetrics:
    """Pooled metrics across sites (see module docstring for the rules)."""
    total = sum(s.num_examples for s in sites)
    with_auc = [s for s in sites if not math.isnan(s.auc)]
    auc_weight = sum(s.num_examples for s in with_auc)
    tp, fp, tn, fn = (sum(getattr(s, k) for s in sites) for k in ("tp", "fp", "tn", "fn"))
    return BinaryMetrics(
        num_examples=total,
        loss=sum(s.loss * s.num_examples for s in sites) / max(total, 1),
        accuracy=(tp + tn) / max(tp + fp + tn + fn, 1),
        auc=(
            sum(s.auc * s.num_examples for s in with_auc) / auc_weight if auc_weight else math.nan
        ),
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
    )
