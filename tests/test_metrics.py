"""Clinical metrics against hand-computed values, pooling rules and the wire format."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

from common import keys
from common.metrics import ClassificationMetrics, classification_metrics, from_wire, pool, to_wire


def _binary_scores(positive: list[float]) -> np.ndarray:
    p = np.asarray(positive)
    return np.stack([1 - p, p], axis=1)


def test_binary_metrics_match_hand_computed_values() -> None:
    # true:   1    1    1    0    0    0    0
    # score: .9   .6   .3   .7   .2   .1   .4   -> predicted 1 1 0 1 0 0 0
    labels = np.array([1, 1, 1, 0, 0, 0, 0])
    scores = _binary_scores([0.9, 0.6, 0.3, 0.7, 0.2, 0.1, 0.4])

    m = classification_metrics(labels, scores, loss=0.5)

    assert (m.tp, m.fn, m.fp, m.tn) == (2, 1, 1, 3)
    assert m.confusion == ((3, 1), (1, 2))
    assert m.accuracy == pytest.approx(5 / 7)
    assert m.sensitivity == pytest.approx(2 / 3)
    assert m.specificity == pytest.approx(3 / 4)
    assert m.precision == pytest.approx(2 / 3)
    assert m.f1 == pytest.approx(2 / 3)
    assert m.balanced_accuracy == pytest.approx((2 / 3 + 3 / 4) / 2)
    # AUC by hand: of the 12 (positive, negative) pairs the positive scores higher in 9
    # (.9 beats all 4 negatives, .6 beats 3 of them, .3 beats 2).
    assert m.auc == pytest.approx(9 / 12)


def test_threshold_moves_the_operating_point_not_the_auc() -> None:
    labels = np.array([1, 1, 1, 0, 0, 0, 0])
    scores = _binary_scores([0.9, 0.6, 0.3, 0.7, 0.2, 0.1, 0.4])

    low = classification_metrics(labels, scores, loss=0.0, threshold=0.25)

    assert (low.tp, low.fn, low.fp, low.tn) == (3, 0, 2, 2)
    assert low.sensitivity == 1.0
    assert low.auc == pytest.approx(9 / 12)


def test_multiclass_metrics_are_macro_one_vs_rest_like_sklearn() -> None:
    rng = np.random.default_rng(0)
    labels = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, 0, 1, 2])
    scores = rng.dirichlet(np.ones(3), size=len(labels))
    predicted = scores.argmax(axis=1)

    m = classification_metrics(labels, scores, loss=1.0)

    assert m.num_classes == 3
    assert sum(map(sum, m.confusion)) == len(labels)
    assert m.accuracy == pytest.approx(float(np.mean(predicted == labels)))
    assert m.balanced_accuracy == pytest.approx(balanced_accuracy_score(labels, predicted))
    assert m.f1 == pytest.approx(f1_score(labels, predicted, average="macro"))
    assert m.auc == pytest.approx(roc_auc_score(labels, scores, multi_class="ovr"))


def test_multiclass_specificity_by_hand() -> None:
    # confusion (rows true, cols predicted): class 0: tn = 3+1+0+4 = 8, fp = 1+0 = 1
    m = ClassificationMetrics(10, 0.0, math.nan, ((2, 1, 0), (1, 3, 1), (0, 0, 4)))
    spec_0 = 8 / 9
    spec_1 = (2 + 0 + 0 + 4) / (2 + 0 + 0 + 4 + 1 + 0)  # tn 6, fp 1
    spec_2 = (2 + 1 + 1 + 3) / (2 + 1 + 1 + 3 + 0 + 1)  # tn 7, fp 1
    assert m.specificity == pytest.approx((spec_0 + spec_1 + spec_2) / 3)
    assert m.sensitivity == pytest.approx((2 / 3 + 3 / 5 + 4 / 4) / 3)
    assert m.precision == pytest.approx((2 / 3 + 3 / 4 + 4 / 5) / 3)


def test_undefined_ratios_are_nan_not_zero() -> None:
    labels = np.array([0, 0, 0])

    m = classification_metrics(labels, _binary_scores([0.1, 0.2, 0.3]), loss=0.1)

    assert math.isnan(m.auc) and math.isnan(m.sensitivity)
    assert m.specificity == 1.0


def test_pooling_sums_confusion_counts_and_weights_auc_by_examples() -> None:
    a = ClassificationMetrics(10, 0.2, 0.9, ((4, 1), (0, 5)))
    b = ClassificationMetrics(30, 0.6, 0.7, ((10, 5), (5, 10)))
    single_class = ClassificationMetrics(5, 1.0, math.nan, ((5, 0), (0, 0)))

    pooled = pool([a, b, single_class])

    assert pooled.confusion == ((19, 6), (5, 15))
    assert pooled.num_examples == 45
    assert pooled.accuracy == pytest.approx(34 / 45)
    assert pooled.sensitivity == pytest.approx(15 / 20)
    assert pooled.specificity == pytest.approx(19 / 25)
    assert pooled.loss == pytest.approx((10 * 0.2 + 30 * 0.6 + 5 * 1.0) / 45)
    assert pooled.auc == pytest.approx((10 * 0.9 + 30 * 0.7) / 40)  # the NaN site left out


def test_a_site_with_an_empty_split_leaves_the_pooled_figures_as_they_were() -> None:
    a = ClassificationMetrics(10, 0.2, 0.9, ((4, 1), (0, 5)))
    empty = classification_metrics(np.zeros(0, dtype=np.int64), np.empty((0, 2)), math.nan)

    pooled = pool([a, empty])

    assert empty.num_examples == 0 and empty.confusion == ((0, 0), (0, 0))
    assert pooled.num_examples == 10
    assert pooled.loss == pytest.approx(0.2)  # not NaN: the empty site has no say
    assert pooled.auc == pytest.approx(0.9)
    assert pooled.confusion == a.confusion


@pytest.mark.parametrize(
    "confusion", [((3, 1), (2, 4)), ((2, 1, 0), (1, 3, 1), (0, 0, 4))], ids=["binary", "3-class"]
)
def test_wire_round_trip_uses_allow_listed_scalars(confusion: tuple) -> None:
    metrics = ClassificationMetrics(sum(map(sum, confusion)), 0.4, 0.8, confusion)

    wire = to_wire(metrics)

    assert set(wire) <= keys.EVAL_METRICS_ALLOWED
    assert all(isinstance(v, int | float) for v in wire.values())
    assert from_wire(wire) == metrics
