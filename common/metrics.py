"""Clinical classification metrics (scikit-learn) for one site, and pooling across sites.

One site: from labels and per-class scores, the confusion matrix (rows = true class,
columns = predicted class), ROC-AUC, and everything derived from the matrix:
- binary (class 1 = positive, predicted when its score >= ``threshold``, default 0.5):
  sensitivity (recall) = TP/(TP+FN), specificity = TN/(TN+FP), precision = TP/(TP+FP),
  F1 = 2PR/(P+R), balanced accuracy = (sensitivity + specificity)/2, ROC-AUC of the
  class-1 score;
- multi-class (prediction = arg-max): each class one-vs-rest, then the unweighted (macro)
  mean over classes; balanced accuracy = macro recall (as ``sklearn.metrics.
  balanced_accuracy_score``); ROC-AUC = macro one-vs-rest (as ``roc_auc_score(...,
  multi_class="ovr", average="macro")``).
A ratio with a zero denominator (e.g. sensitivity at a site without positives) is NaN and
left out of macro means; F1 is 0 when precision and recall are both 0.

Pooling (the server never sees per-image scores):
- confusion matrix: the sum of the sites' matrices, so every count-based metric is exact;
- loss: example-weighted mean of site losses;
- ROC-AUC: exact, from the sum of the sites' threshold-grid counts (``common.roc``): the AUC
  of every site's scores pooled, at the grid's resolution (1/100), and the pooled ROC curve;
  ``at_operating_point`` puts it, and the confusion matrix at the operating threshold chosen on
  the pooled validation counts, into the pooled metrics. ``pool`` alone (replies without
  counts, from an older site) falls back to the example-weighted mean of the sites' AUCs,
  which ignores how scores compare *across* sites.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import confusion_matrix, roc_auc_score

from common import keys
from common.roc import SplitCounts

Confusion = tuple[tuple[int, ...], ...]


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def _nanmean(values: Sequence[float]) -> float:
    defined = [v for v in values if not math.isnan(v)]
    return sum(defined) / len(defined) if defined else math.nan


@dataclass(frozen=True)
class ClassificationMetrics:
    """Metrics of one site's held-out split (or of several sites, pooled)."""

    num_examples: int
    loss: float
    auc: float  # NaN when undefined (a single class present)
    confusion: Confusion  # confusion[true][predicted]

    @property
    def num_classes(self) -> int:
        return len(self.confusion)

    def _matrix(self) -> np.ndarray:
        return np.asarray(self.confusion, dtype=np.int64)

    def _one_vs_rest(self, k: int) -> tuple[int, int, int, int]:
        """(tp, fp, tn, fn) of class ``k`` against the rest."""
        m = self._matrix()
        tp = int(m[k, k])
        fn = int(m[k].sum()) - tp
        fp = int(m[:, k].sum()) - tp
        return tp, fp, int(m.sum()) - tp - fn - fp, fn

    def _per_class(self) -> list[tuple[int, int, int, int]]:
        classes = [1] if self.num_classes == 2 else range(self.num_classes)
        return [self._one_vs_rest(k) for k in classes]

    @property
    def tp(self) -> int:
        return self._one_vs_rest(1)[0]

    @property
    def fp(self) -> int:
        return self._one_vs_rest(1)[1]

    @property
    def tn(self) -> int:
        return self._one_vs_rest(1)[2]

    @property
    def fn(self) -> int:
        return self._one_vs_rest(1)[3]

    @property
    def accuracy(self) -> float:
        m = self._matrix()
        return _ratio(float(np.trace(m)), float(m.sum()))

    @property
    def sensitivity(self) -> float:
        return _nanmean([_ratio(tp, tp + fn) for tp, _, _, fn in self._per_class()])

    @property
    def specificity(self) -> float:
        return _nanmean([_ratio(tn, tn + fp) for _, fp, tn, _ in self._per_class()])

    @property
    def precision(self) -> float:
        return _nanmean([_ratio(tp, tp + fp) for tp, fp, _, _ in self._per_class()])

    @property
    def f1(self) -> float:
        scores = []
        for tp, fp, _, fn in self._per_class():
            if tp + fp + fn == 0:
                scores.append(math.nan)  # class absent and never predicted
            else:
                scores.append(2 * tp / (2 * tp + fp + fn))
        return _nanmean(scores)

    @property
    def balanced_accuracy(self) -> float:
        if self.num_classes == 2:
            return _nanmean([self.sensitivity, self.specificity])
        return self.sensitivity  # macro recall

    def summary(self) -> dict[str, object]:
        """JSON-ready scalars (NaN kept as float NaN) and the confusion matrix."""
        return {
            "num_examples": self.num_examples,
            "loss": self.loss,
            "accuracy": self.accuracy,
            "auc": self.auc,
            "sensitivity": self.sensitivity,
            "specificity": self.specificity,
            "precision": self.precision,
            "f1": self.f1,
            "balanced_accuracy": self.balanced_accuracy,
            "confusion": [list(row) for row in self.confusion],
        }


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Binary AUC of the class-1 score, or macro one-vs-rest AUC; NaN if undefined.

    ``scores`` is (N, K) class probabilities. Classes absent from ``labels`` (or present
    in every example) are left out of the macro mean.
    """
    num_classes = scores.shape[1]
    classes = [1] if num_classes == 2 else range(num_classes)
    aucs = []
    for k in classes:
        is_k = labels == k
        if is_k.any() and not is_k.all():
            aucs.append(float(roc_auc_score(is_k, scores[:, k])))
    return _nanmean(aucs)


def predict(scores: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Class-1 score >= ``threshold`` for binary scores, arg-max otherwise."""
    if scores.shape[1] == 2:
        return (scores[:, 1] >= threshold).astype(np.int64)
    return scores.argmax(axis=1)


def classification_metrics(
    labels: np.ndarray, scores: np.ndarray, loss: float, threshold: float = 0.5
) -> ClassificationMetrics:
    """Metrics for class-probability ``scores`` (N, K) against integer ``labels``."""
    num_classes = scores.shape[1]
    if len(labels):
        classes = list(range(num_classes))
        matrix = confusion_matrix(labels, predict(scores, threshold), labels=classes)
    else:  # an empty split (a small site's test or val): scikit-learn refuses empty input
        matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    return ClassificationMetrics(
        num_examples=len(labels),
        loss=loss,
        auc=roc_auc(labels, scores) if len(labels) else math.nan,
        confusion=tuple(tuple(int(v) for v in row) for row in matrix),
    )


def pool(sites: Sequence[ClassificationMetrics]) -> ClassificationMetrics:
    """Pooled metrics across sites (see module docstring for the rules)."""
    total = sum(s.num_examples for s in sites)
    with_auc = [s for s in sites if not math.isnan(s.auc)]
    auc_weight = sum(s.num_examples for s in with_auc)
    num_classes = max((s.num_classes for s in sites), default=2)
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    for site in sites:
        matrix[: site.num_classes, : site.num_classes] += site._matrix()
    return ClassificationMetrics(
        num_examples=total,
        loss=(  # a site with no examples (its loss NaN) has no say
            sum(s.loss * s.num_examples for s in sites if s.num_examples) / total
            if total
            else math.nan
        ),
        auc=(
            sum(s.auc * s.num_examples for s in with_auc) / auc_weight if auc_weight else math.nan
        ),
        confusion=tuple(tuple(int(v) for v in row) for row in matrix),
    )


def at_operating_point(
    metrics: ClassificationMetrics, counts: SplitCounts | None, index: int | None
) -> ClassificationMetrics:
    """``metrics`` with the exact AUC of ``counts`` and, for a binary task, the confusion
    matrix at grid cut-off ``index`` (``None``: the matrix as it is, e.g. arg-max)."""
    if counts is None:
        return metrics
    confusion = metrics.confusion
    if index is not None and len(counts.curves) == 1:
        confusion = counts.positive.confusion(index)
    return dataclasses.replace(metrics, auc=counts.auc, confusion=confusion)


# -- on the wire: scalars only -----------------------------------------------------------
def to_wire(metrics: ClassificationMetrics) -> dict[str, int | float]:
    """Allow-listed scalars for an evaluate reply (``common.keys``).

    Binary tasks send tp/fp/tn/fn; multi-class tasks send every cell as ``cm-<true>-<pred>``.
    """
    wire: dict[str, int | float] = {
        keys.NUM_EXAMPLES: metrics.num_examples,
        keys.EVAL_LOSS: metrics.loss,
        keys.EVAL_ACC: metrics.accuracy,
        keys.EVAL_AUC: metrics.auc,
    }
    if metrics.num_classes == 2:
        wire.update(
            {
                keys.TRUE_POS: metrics.tp,
                keys.FALSE_POS: metrics.fp,
                keys.TRUE_NEG: metrics.tn,
                keys.FALSE_NEG: metrics.fn,
            }
        )
    else:
        for i, row in enumerate(metrics.confusion):
            for j, count in enumerate(row):
                wire[keys.confusion_key(i, j)] = count
    return wire


def from_wire(record: Mapping[str, object]) -> ClassificationMetrics:
    """Inverse of :func:`to_wire` (accepts a Flower ``MetricRecord``)."""

    def number(key: str) -> float:
        return float(record[key])  # type: ignore[arg-type]

    if keys.TRUE_POS in record:
        tp, fp, tn, fn = (int(number(k)) for k in keys.BINARY_COUNTS)
        confusion: Confusion = ((tn, fp), (fn, tp))
    else:
        cells = {k: int(number(k)) for k in record if keys.parse_confusion_key(k) is not None}
        size = 1 + max((keys.parse_confusion_key(k)[0] for k in cells), default=1)  # type: ignore[index]
        confusion = tuple(
            tuple(cells.get(keys.confusion_key(i, j), 0) for j in range(size)) for i in range(size)
        )
    return ClassificationMetrics(
        num_examples=int(number(keys.NUM_EXAMPLES)),
        loss=number(keys.EVAL_LOSS),
        auc=number(keys.EVAL_AUC),
        confusion=confusion,
    )
