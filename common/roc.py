"""Exact federated ROC from counts: threshold-grid confusion counts, pooling, the operating point.

A site never sends per-image scores. For each class k (binary: class 1 only) it counts, at
``GRID`` = 101 probability cut-offs ``t_i = i/100``, how many of its images are called
positive (probability of k >= t_i) among the images of class k (TP) and among the rest (FP),
plus how many of each there are (TP + FN, FP + TN). Counts add up: the server's sum over sites
is the count table of the concatenated scores, so the pooled ROC curve and its AUC
(trapezoids over the grid points and (0, 0)) are those of every image pooled, at the grid's
resolution: equal to ``sklearn.metrics.roc_auc_score`` when scores are multiples of 1/100,
within the grid's resolution otherwise (scores falling between two cut-offs are tied).

The operating threshold is picked on the pooled validation curve: Youden's J (sensitivity +
specificity - 1) by default, or the highest cut-off that keeps sensitivity >= a target.
Calibration counts: images per probability bin (10 equal bins), positives among them and the
sum of their scores (the bin's mean score), for a reliability plot from counts alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from common import keys

GRID = keys.GRID
THRESHOLDS: np.ndarray = np.arange(GRID) / (GRID - 1)  # t_i = i/100, exactly as i/100
CAL_BINS = keys.CAL_BINS
BIN_EDGES: np.ndarray = np.arange(CAL_BINS + 1) / CAL_BINS


def grid_index(threshold: float) -> int:
    """Index of the grid cut-off nearest ``threshold``."""
    return int(np.clip(round(threshold * (GRID - 1)), 0, GRID - 1))


@dataclass(frozen=True)
class Curve:
    """One class against the rest: TP and FP at every cut-off, and the class sizes."""

    tp: np.ndarray  # (GRID,) int64: positives with score >= t_i
    fp: np.ndarray  # (GRID,) int64: negatives with score >= t_i
    positives: int
    negatives: int

    @classmethod
    def empty(cls) -> Curve:
        zeros = np.zeros(GRID, dtype=np.int64)
        return cls(zeros, zeros.copy(), 0, 0)

    def __add__(self, other: Curve) -> Curve:
        return Curve(
            self.tp + other.tp,
            self.fp + other.fp,
            self.positives + other.positives,
            self.negatives + other.negatives,
        )

    @property
    def fn(self) -> np.ndarray:
        return self.positives - self.tp

    @property
    def tn(self) -> np.ndarray:
        return self.negatives - self.fp

    def sensitivity(self) -> np.ndarray:
        """TP / (TP + FN) at every cut-off (NaN without positives)."""
        return self.tp / self.positives if self.positives else np.full(GRID, math.nan)

    def specificity(self) -> np.ndarray:
        """TN / (TN + FP) at every cut-off (NaN without negatives)."""
        return self.tn / self.negatives if self.negatives else np.full(GRID, math.nan)

    @property
    def auc(self) -> float:
        """Area under the ROC through the grid points and (0, 0); NaN if a class is absent."""
        if not self.positives or not self.negatives:
            return math.nan
        tpr = np.append(self.tp / self.positives, 0.0)  # cut-offs rising: FPR falls to 0
        fpr = np.append(self.fp / self.negatives, 0.0)
        return float(np.sum((fpr[:-1] - fpr[1:]) * (tpr[:-1] + tpr[1:]) / 2))

    def confusion(self, index: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """Binary confusion matrix ``[[TN, FP], [FN, TP]]`` at cut-off ``index``."""
        tp, fp = int(self.tp[index]), int(self.fp[index])
        return ((self.negatives - fp, fp), (self.positives - tp, tp))

    def to_json(self) -> dict[str, object]:
        """The contract's curve: thresholds, tp, fp, fn, tn (lists) and the AUC."""
        auc = self.auc
        return {
            "thresholds": [float(t) for t in THRESHOLDS],
            "tp": [int(v) for v in self.tp],
            "fp": [int(v) for v in self.fp],
            "fn": [int(v) for v in self.fn],
            "tn": [int(v) for v in self.tn],
            "auc": None if math.isnan(auc) else auc,
        }


def curve_counts(is_positive: np.ndarray, scores: np.ndarray) -> Curve:
    """Counts of one class against the rest from boolean labels and that class's scores."""
    is_positive = np.asarray(is_positive, dtype=bool)
    # cut-offs at or below each score: the image is positive at t_0 .. t_(n-1)
    passed = np.searchsorted(THRESHOLDS, np.asarray(scores, dtype=np.float64), side="right")

    def at_least(mask: np.ndarray) -> np.ndarray:
        histogram = np.bincount(passed[mask], minlength=GRID + 1)
        return histogram[::-1].cumsum()[::-1][1:].astype(np.int64)  # passed > i

    return Curve(
        at_least(is_positive),
        at_least(~is_positive),
        int(is_positive.sum()),
        int((~is_positive).sum()),
    )


@dataclass(frozen=True)
class Calibration:
    """Per probability bin: images, positives among them, and the sum of their scores."""

    count: np.ndarray  # (CAL_BINS,) int64
    positives: np.ndarray  # (CAL_BINS,) int64
    score_sum: np.ndarray  # (CAL_BINS,) float64

    @classmethod
    def empty(cls) -> Calibration:
        return cls(
            np.zeros(CAL_BINS, dtype=np.int64),
            np.zeros(CAL_BINS, dtype=np.int64),
            np.zeros(CAL_BINS),
        )

    def __add__(self, other: Calibration) -> Calibration:
        return Calibration(
            self.count + other.count,
            self.positives + other.positives,
            self.score_sum + other.score_sum,
        )

    def to_json(self) -> dict[str, list]:
        """The contract's calibration: bin edges, counts, positives, mean score per bin."""
        mean = [
            float(s / c) if c else None for s, c in zip(self.score_sum, self.count, strict=True)
        ]
        return {
            "bin_edges": [float(e) for e in BIN_EDGES],
            "count": [int(v) for v in self.count],
            "positives": [int(v) for v in self.positives],
            "mean_score": mean,
        }


def calibration_counts(is_positive: np.ndarray, scores: np.ndarray) -> Calibration:
    """Bin ``scores`` into 10 equal bins ([0.9, 1.0] closed) and count per bin."""
    scores = np.asarray(scores, dtype=np.float64)
    bins = np.clip((scores * CAL_BINS).astype(np.int64), 0, CAL_BINS - 1)
    is_positive = np.asarray(is_positive, dtype=bool)
    return Calibration(
        np.bincount(bins, minlength=CAL_BINS).astype(np.int64),
        np.bincount(bins[is_positive], minlength=CAL_BINS).astype(np.int64),
        np.bincount(bins, weights=scores, minlength=CAL_BINS),
    )


@dataclass(frozen=True)
class SplitCounts:
    """What one site (or the pool of sites) knows about a split, as counts.

    ``curves``: binary tasks one curve (class 1 against class 0); multi-class one per class,
    one against the rest. ``calibration``: binary: class-1 probability against class-1
    labels; multi-class: top-1 probability against "top-1 is right".
    """

    curves: tuple[Curve, ...]
    calibration: Calibration

    @property
    def positive(self) -> Curve:
        """The binary positive class's curve; for multi-class the sum over classes (micro)."""
        if len(self.curves) == 1:
            return self.curves[0]
        total = Curve.empty()
        for curve in self.curves:
            total = total + curve
        return total

    @property
    def auc(self) -> float:
        """Binary AUC, or the macro mean of the defined one-vs-rest AUCs."""
        aucs = [c.auc for c in self.curves if not math.isnan(c.auc)]
        return float(np.mean(aucs)) if aucs else math.nan

    @property
    def num_examples(self) -> int:
        first = self.curves[0]
        return first.positives + first.negatives

    def __add__(self, other: SplitCounts) -> SplitCounts:
        if len(self.curves) != len(other.curves):
            raise ValueError("cannot pool counts of tasks with different numbers of classes")
        curves = tuple(a + b for a, b in zip(self.curves, other.curves, strict=True))
        return SplitCounts(curves, self.calibration + other.calibration)

    def to_json(self, class_names: Sequence[str] = ()) -> dict[str, object]:
        """The contract's per-split curve (plus ``classes`` for multi-class)."""
        summary = self.positive.to_json()
        if len(self.curves) > 1:
            auc = self.auc
            summary["auc"] = None if math.isnan(auc) else auc
            names = list(class_names) or [str(k) for k in range(len(self.curves))]
            summary["classes"] = {n: c.to_json() for n, c in zip(names, self.curves, strict=False)}
        return summary


def split_counts(labels: np.ndarray, probabilities: np.ndarray) -> SplitCounts:
    """Counts of a split from integer ``labels`` and class probabilities (N, K)."""
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2:
        probabilities = probabilities.reshape(len(labels), -1)
    num_classes = probabilities.shape[1]
    if num_classes == 2:
        is_positive = labels == 1
        curves: tuple[Curve, ...] = (curve_counts(is_positive, probabilities[:, 1]),)
        calibration = calibration_counts(is_positive, probabilities[:, 1])
    else:
        curves = tuple(curve_counts(labels == k, probabilities[:, k]) for k in range(num_classes))
        top = probabilities.argmax(axis=1) if len(labels) else np.zeros(0, dtype=np.int64)
        confidence = probabilities.max(axis=1) if len(labels) else np.zeros(0)
        calibration = calibration_counts(top == labels, confidence)
    return SplitCounts(curves, calibration)


def pool_counts(sites: Sequence[SplitCounts]) -> SplitCounts | None:
    """The sum of the sites' counts (None without any site)."""
    if not sites:
        return None
    total = sites[0]
    for site in sites[1:]:
        total = total + site
    return total


# -- the operating threshold ----------------------------------------------------------------
@dataclass(frozen=True)
class OperatingPoint:
    """The chosen cut-off (grid index, value) and the rule that chose it."""

    index: int
    rule: str

    @property
    def threshold(self) -> float:
        return float(THRESHOLDS[self.index])


DEFAULT_INDEX = grid_index(0.5)


def choose_threshold(curve: Curve | None, target_sensitivity: float = 0.0) -> OperatingPoint:
    """The operating cut-off on a (pooled validation) curve.

    ``target_sensitivity`` 0: Youden's J = sensitivity + specificity - 1, maximal (ties: the
    cut-off nearest 0.5). Otherwise the highest cut-off whose sensitivity reaches the target
    (the most specific one that does). Without positives and negatives: 0.5.
    """
    rule = f"sensitivity>={target_sensitivity:.2f}" if target_sensitivity > 0 else "youden"
    if curve is None or not curve.positives or not curve.negatives:
        return OperatingPoint(DEFAULT_INDEX, f"{rule} (no validation data: 0.5)")
    sensitivity, specificity = curve.sensitivity(), curve.specificity()
    if target_sensitivity > 0:
        # tiny slack so a target like 0.8 is met by 4/5 despite float rounding
        reaching = np.flatnonzero(sensitivity >= target_sensitivity - 1e-12)
        return OperatingPoint(int(reaching.max()), rule)  # t_0 always reaches sensitivity 1
    youden = sensitivity + specificity - 1
    best = np.flatnonzero(np.isclose(youden, youden.max(), rtol=0, atol=1e-12))
    return OperatingPoint(int(best[np.argmin(np.abs(best - DEFAULT_INDEX))]), rule)


# -- on the wire: one scalar per count (``common.keys``) -----------------------------------
def counts_to_wire(scope: str, counts: SplitCounts) -> dict[str, int | float]:
    """Scalars for an evaluate reply: grid counts and class sizes of ``scope`` (a split or
    ``test.<group>``); calibration bins for the splits themselves."""
    wire: dict[str, int | float] = {}
    binary = len(counts.curves) == 1
    for k, curve in enumerate(counts.curves):
        index = 1 if binary else k
        wire[keys.curve_key(scope, index, "pos")] = curve.positives
        wire[keys.curve_key(scope, index, "neg")] = curve.negatives
        for i in range(GRID):
            wire[keys.curve_key(scope, index, "tp", i)] = int(curve.tp[i])
            wire[keys.curve_key(scope, index, "fp", i)] = int(curve.fp[i])
    if scope in keys.EVAL_SPLITS:
        cal = counts.calibration
        for b in range(CAL_BINS):
            wire[keys.calibration_key(scope, "n", b)] = int(cal.count[b])
            wire[keys.calibration_key(scope, "pos", b)] = int(cal.positives[b])
            wire[keys.calibration_key(scope, "sum", b)] = float(cal.score_sum[b])
    return wire


def counts_from_wire(
    record: Mapping[str, object], scope: str, num_classes: int
) -> SplitCounts | None:
    """Inverse of :func:`counts_to_wire`; None when the reply has no counts for ``scope``."""

    def value(key: str) -> float:
        return float(record[key])  # type: ignore[arg-type]

    classes = [1] if num_classes == 2 else list(range(num_classes))
    if keys.curve_key(scope, classes[0], "pos") not in record:
        return None
    curves = tuple(
        Curve(
            np.array([value(keys.curve_key(scope, k, "tp", i)) for i in range(GRID)], np.int64),
            np.array([value(keys.curve_key(scope, k, "fp", i)) for i in range(GRID)], np.int64),
            int(value(keys.curve_key(scope, k, "pos"))),
            int(value(keys.curve_key(scope, k, "neg"))),
        )
        for k in classes
    )
    calibration = Calibration.empty()
    if keys.calibration_key(scope, "n", 0) in record:
        calibration = Calibration(
            np.array(
                [value(keys.calibration_key(scope, "n", b)) for b in range(CAL_BINS)], np.int64
            ),
            np.array(
                [value(keys.calibration_key(scope, "pos", b)) for b in range(CAL_BINS)], np.int64
            ),
            np.array([value(keys.calibration_key(scope, "sum", b)) for b in range(CAL_BINS)]),
        )
    return SplitCounts(curves, calibration)


def wire_num_classes(record: Mapping[str, object]) -> int:
    """How many classes a reply's counts describe (2 for a binary task)."""
    if keys.curve_key(keys.EVAL_SPLITS[1], 1, "pos") in record and (
        keys.curve_key(keys.EVAL_SPLITS[1], 0, "pos") not in record
    ):
        return 2
    return sum(
        1
        for k in range(keys.MAX_CLASSES)
        if keys.curve_key(keys.EVAL_SPLITS[1], k, "pos") in record
    )
