"""Threshold-grid counts: pooled ROC equals sklearn on concatenated scores; the threshold rule."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from common import keys
from common.roc import (
    GRID,
    THRESHOLDS,
    Curve,
    calibration_counts,
    choose_threshold,
    counts_from_wire,
    counts_to_wire,
    curve_counts,
    pool_counts,
    split_counts,
)


def _sites(rng: np.random.Generator, quantised: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """Three "sites" of different sizes and score distributions (shifted per site)."""
    sites = []
    for size, shift in ((80, 0.0), (150, 0.15), (37, -0.1)):
        labels = rng.integers(0, 2, size)
        scores = np.clip(rng.normal(0.4 + 0.25 * labels + shift, 0.2), 0, 1)
        if quantised:
            scores = np.round(scores * 100) / 100
        sites.append((labels, np.stack([1 - scores, scores], axis=1)))
    return sites


def test_pooled_auc_equals_sklearn_on_concatenated_quantised_scores() -> None:
    rng = np.random.default_rng(0)
    sites = _sites(rng, quantised=True)

    pooled = pool_counts([split_counts(labels, scores) for labels, scores in sites])

    labels = np.concatenate([s[0] for s in sites])
    scores = np.concatenate([s[1][:, 1] for s in sites])
    assert pooled is not None
    assert pooled.auc == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    # the counts are those of the concatenated scores at every cut-off
    for i in (0, 17, 50, 100):
        assert pooled.positive.tp[i] == int(((scores >= THRESHOLDS[i]) & (labels == 1)).sum())
        assert pooled.positive.fp[i] == int(((scores >= THRESHOLDS[i]) & (labels == 0)).sum())


def test_pooled_auc_of_continuous_scores_is_within_the_grid_resolution() -> None:
    rng = np.random.default_rng(1)
    sites = _sites(rng, quantised=False)

    pooled = pool_counts([split_counts(labels, scores) for labels, scores in sites])

    labels = np.concatenate([s[0] for s in sites])
    scores = np.concatenate([s[1][:, 1] for s in sites])
    exact = roc_auc_score(labels, scores)
    assert pooled is not None
    # scores between two cut-offs count as tied: the difference is bounded by the pairs that
    # fall in the same 1/100 bin; for these ~270 scores it stays under 0.005
    assert abs(pooled.auc - exact) < 0.005
    assert pooled.auc != pytest.approx(roc_auc_score(labels, scores > 0.5))  # not a 1-point ROC


def test_multiclass_counts_are_one_vs_rest_per_class_with_macro_auc() -> None:
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 200)
    logits = rng.normal(size=(200, 3)) + 1.5 * np.eye(3)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    probs = np.round(probs * 100) / 100

    counts = split_counts(labels, probs)

    assert len(counts.curves) == 3
    for k, curve in enumerate(counts.curves):
        assert curve.auc == pytest.approx(roc_auc_score(labels == k, probs[:, k]), abs=1e-12)
    assert counts.auc == pytest.approx(np.mean([c.auc for c in counts.curves]))


def test_youden_picks_the_cutoff_separating_known_scores() -> None:
    # negatives at 0.1..0.3, positives at 0.6..0.9: any cut-off in (0.3, 0.6] separates them
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.9])
    curve = curve_counts(labels == 1, scores)

    point = choose_threshold(curve)

    assert point.rule == "youden"
    assert 0.3 < point.threshold <= 0.6
    assert point.threshold == pytest.approx(0.5)  # ties broken towards 0.5
    assert curve.confusion(point.index) == ((3, 0), (0, 4))


def test_youden_on_overlapping_scores_maximises_j() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.05, 0.15, 0.25, 0.72, 0.2, 0.7, 0.8, 0.9])
    curve = curve_counts(labels == 1, scores)

    point = choose_threshold(curve)

    j = curve.sensitivity() + curve.specificity() - 1
    assert j[point.index] == pytest.approx(j.max())
    # best: positives >= 0.7 (3/4) with only 0.72 among negatives: J = 0.75 + 0.75 - 1 = 0.5,
    # or >= 0.73 (sens 0.5, spec 1.0): also J = 0.5; the cut-off nearest 0.5 wins: 0.26..0.70
    assert point.threshold == pytest.approx(0.5)


def test_target_sensitivity_takes_the_highest_cutoff_that_reaches_it() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.35, 0.5, 0.3, 0.4, 0.6, 0.8, 0.9])
    curve = curve_counts(labels == 1, scores)

    point = choose_threshold(curve, target_sensitivity=0.8)

    assert point.rule == "sensitivity>=0.80"
    assert point.threshold == pytest.approx(0.4)  # 4 of 5 positives have >= 0.4
    assert curve.sensitivity()[point.index] == pytest.approx(0.8)


def test_without_validation_data_the_threshold_is_one_half() -> None:
    assert choose_threshold(None).threshold == 0.5
    only_negatives = curve_counts(np.zeros(5, dtype=bool), np.linspace(0, 1, 5))
    assert choose_threshold(only_negatives).threshold == 0.5


def test_calibration_bins_count_images_positives_and_mean_score() -> None:
    labels = np.array([1, 0, 1, 1, 0])
    scores = np.array([0.05, 0.07, 0.55, 0.95, 1.0])

    cal = calibration_counts(labels == 1, scores)

    assert list(cal.count) == [2, 0, 0, 0, 0, 1, 0, 0, 0, 2]
    assert list(cal.positives) == [1, 0, 0, 0, 0, 1, 0, 0, 0, 1]
    summary = cal.to_json()
    assert summary["mean_score"][0] == pytest.approx(0.06)
    assert summary["mean_score"][1] is None
    assert len(summary["bin_edges"]) == 11


def test_counts_cross_the_wire_as_allow_listed_scalars_and_back() -> None:
    rng = np.random.default_rng(3)
    labels, scores = _sites(rng, quantised=False)[0]
    counts = split_counts(labels, scores)

    wire = counts_to_wire("val", counts)
    back = counts_from_wire(wire, "val", num_classes=2)

    assert set(wire) <= keys.EVAL_METRICS_ALLOWED
    assert all(isinstance(v, int | float) for v in wire.values())
    assert back is not None
    assert np.array_equal(back.positive.tp, counts.positive.tp)
    assert np.array_equal(back.calibration.count, counts.calibration.count)
    assert counts_from_wire(wire, "test", num_classes=2) is None


def test_curve_json_follows_the_contract() -> None:
    curve = curve_counts(np.array([True, False]), np.array([0.9, 0.1]))

    summary = curve.to_json()

    assert len(summary["thresholds"]) == GRID
    assert summary["tp"][0] + summary["fn"][0] == 1
    assert summary["tn"][100] == 1
    assert summary["auc"] == 1.0
    assert Curve.empty().to_json()["auc"] is None


def _reply(site_index: int, labels: np.ndarray, scores: np.ndarray, val: tuple | None):
    from flwr.app import MetricRecord, RecordDict

    from common.metrics import classification_metrics, to_wire

    wire = {
        **to_wire(classification_metrics(labels, scores, loss=0.5)),
        **counts_to_wire("test", split_counts(labels, scores)),
        keys.SITE_INDEX: site_index,
    }
    if val is not None:
        wire.update(counts_to_wire("val", split_counts(*val)))
    return RecordDict({keys.METRICS: MetricRecord(wire)})


def test_the_server_reports_exact_pooled_auc_and_test_metrics_at_the_val_threshold() -> None:
    from flwr.app import ArrayRecord

    from server.recorder import RoundRecorder

    rng = np.random.default_rng(4)
    tests, vals = _sites(rng, quantised=True), _sites(rng, quantised=True)
    records = []
    recorder = RoundRecorder(listener=lambda record, _: records.append(record))
    replies = [_reply(i, *tests[i], vals[i]) for i in range(3)]

    recorder.aggregate_evaluate(replies, keys.NUM_EXAMPLES)
    recorder.end_round(1, ArrayRecord())

    (record,) = records
    labels = np.concatenate([t[0] for t in tests])
    scores = np.concatenate([t[1][:, 1] for t in tests])
    assert record.auc == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    val_curve = pool_counts([split_counts(*v) for v in vals]).positive  # type: ignore[union-attr]
    expected = choose_threshold(val_curve)
    assert record.threshold == pytest.approx(expected.threshold)
    assert record.threshold_rule == "youden"
    predicted = scores >= record.threshold
    assert record.confusion == [
        [int((~predicted & (labels == 0)).sum()), int((predicted & (labels == 0)).sum())],
        [int((~predicted & (labels == 1)).sum()), int((predicted & (labels == 1)).sum())],
    ]
    assert record.sensitivity == pytest.approx(predicted[labels == 1].mean())
    assert set(record.curves) == {"val", "test"}
    assert record.curves["test"]["auc"] == pytest.approx(record.auc)
    assert sum(record.calibration["count"]) == len(labels)
    assert set(record.fairness["sites"]) == {"hospital-a", "hospital-b", "hospital-c"}
    # the record survives metrics.jsonl
    from server.recorder import RoundRecord

    again = RoundRecord.from_json(record.to_json())
    assert again.threshold == record.threshold and again.curves == record.to_json()["curves"]


def test_a_missing_val_split_is_carved_from_train_stratified_and_seeded() -> None:
    import torch

    from common.data.sitedata import SiteData, with_validation

    labels = torch.tensor([0] * 70 + [1] * 30)
    images = torch.arange(100, dtype=torch.float32).reshape(100, 1, 1, 1)
    data = SiteData("hospital-a", images, labels, images[:0], labels[:0])

    carved = with_validation(data, 0.2, seed=0)
    again = with_validation(data, 0.2, seed=0)

    assert carved.val_y.tolist().count(0) == 14 and carved.val_y.tolist().count(1) == 6
    assert len(carved.train_y) == 80
    held, kept = set(carved.val_x.flatten().tolist()), set(carved.train_x.flatten().tolist())
    assert not held & kept and len(held | kept) == 100  # disjoint, nothing lost
    assert torch.equal(again.val_x, carved.val_x)  # the same images every round
    assert not torch.equal(with_validation(data, 0.2, seed=1).val_x, carved.val_x)
    assert with_validation(carved, 0.2, seed=0) is carved  # a site with val keeps it


def test_multiclass_rounds_keep_arg_max_and_report_the_exact_macro_auc() -> None:
    from flwr.app import ArrayRecord, MetricRecord, RecordDict

    from common.metrics import classification_metrics, to_wire
    from server.recorder import RoundRecorder

    rng = np.random.default_rng(5)
    replies, all_labels, all_probs = [], [], []
    for site in range(2):
        labels = rng.integers(0, 3, 90)
        probs = np.round(rng.dirichlet(np.ones(3), 90) * 0.5 + 0.5 * np.eye(3)[labels], 2)
        wire = {
            **to_wire(classification_metrics(labels, probs, loss=0.7)),
            **counts_to_wire("test", split_counts(labels, probs)),
            **counts_to_wire("val", split_counts(labels, probs)),
            keys.SITE_INDEX: site,
        }
        replies.append(RecordDict({keys.METRICS: MetricRecord(wire)}))
        all_labels.append(labels)
        all_probs.append(probs)
    records = []
    recorder = RoundRecorder(
        listener=lambda record, _: records.append(record), class_names=("a", "b", "c")
    )

    recorder.aggregate_evaluate(replies, keys.NUM_EXAMPLES)
    recorder.end_round(1, ArrayRecord())

    (record,) = records
    labels, probs = np.concatenate(all_labels), np.concatenate(all_probs)
    macro = np.mean([roc_auc_score(labels == k, probs[:, k]) for k in range(3)])
    assert record.auc == pytest.approx(macro, abs=1e-12)
    assert record.threshold is None and record.threshold_rule == "arg-max"
    assert set(record.curves["test"]["classes"]) == {"a", "b", "c"}
    assert sum(map(sum, record.confusion)) == 180
