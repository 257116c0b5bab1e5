"""One round's pooled evaluation, from the sites' counts alone (``common.roc``).

The sites' threshold-grid counts are summed per split. The operating threshold is chosen on
the pooled ``val`` counts (``eval.target-sensitivity``: Youden's J by default); the round's
metrics are the pooled ``test`` counts at that threshold, with the exact pooled AUC. A
multi-class task keeps arg-max predictions (no threshold) and gets the exact macro AUC.
Fairness: sensitivity and specificity at the operating threshold per site and per patient
group (counts the sites sent for ``test.<group>``); a group with fewer than
``eval.min-group-size`` images in the pool is suppressed here too (sites already leave out
their own small groups), and the largest gap between groups of one kind (sex, age) and
between sites is reported with a flag above ``eval.flag-gap``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from common import keys
from common.config import EvalConfig
from common.metrics import ClassificationMetrics, at_operating_point, pool
from common.roc import OperatingPoint, SplitCounts, choose_threshold, pool_counts


@dataclass(frozen=True)
class SiteEvaluation:
    """What one site's evaluate reply said: test metrics and counts per scope."""

    metrics: ClassificationMetrics
    counts: Mapping[str, SplitCounts]  # "val", "test", "test.sex=F", ...


@dataclass
class PooledEvaluation:
    """The round's evaluation as the contract's ``RoundRecord`` fields need it."""

    pooled: ClassificationMetrics
    sites: dict[str, ClassificationMetrics]
    threshold: float | None = None
    threshold_rule: str = ""
    curves: dict[str, dict[str, object]] = field(default_factory=dict)
    calibration: dict[str, object] = field(default_factory=dict)
    fairness: dict[str, object] = field(default_factory=dict)


def _rates(counts: SplitCounts, index: int) -> dict[str, object]:
    curve = counts.positive
    return {
        "n": counts.num_examples,
        "sensitivity": float(curve.sensitivity()[index]),
        "specificity": float(curve.specificity()[index]),
    }


def _max_gap(
    rows: Mapping[str, Mapping[str, object]], kinds: Sequence[Sequence[str]], flag_gap: float
) -> dict[str, object]:
    """The largest sensitivity / specificity gap between two rows of the same kind."""
    gaps: dict[str, object] = {}
    for metric in ("sensitivity", "specificity"):
        best: tuple[float, list[str]] | None = None
        for names in kinds:
            for a, b in itertools.combinations(names, 2):
                va, vb = float(rows[a][metric]), float(rows[b][metric])  # type: ignore[arg-type]
                if math.isnan(va) or math.isnan(vb):
                    continue
                if best is None or abs(va - vb) > best[0]:
                    best = (abs(va - vb), [a, b] if va >= vb else [b, a])
        if best is not None:
            gaps[metric] = {"value": best[0], "between": best[1], "flagged": best[0] > flag_gap}
    return gaps


def fairness(
    site_counts: Mapping[str, SplitCounts],
    group_counts: Mapping[str, SplitCounts],
    point: OperatingPoint,
    settings: EvalConfig,
) -> dict[str, object]:
    """Per site and per patient group rates at the operating point (binary tasks)."""
    sites = {name: _rates(c, point.index) for name, c in sorted(site_counts.items())}
    groups: dict[str, dict[str, object]] = {}
    suppressed: list[str] = []
    for group in keys.GROUPS:
        counts = group_counts.get(group)
        if counts is None or not counts.num_examples:  # no site reported it
            continue
        if counts.num_examples < settings.min_group_size:
            suppressed.append(group)
        else:
            groups[group] = _rates(counts, point.index)
    kinds = [[g for g in groups if g.startswith(prefix)] for prefix in ("sex=", "age=")]
    return {
        "min_group": settings.min_group_size,
        "flag_gap": settings.flag_gap,
        "threshold": point.threshold,
        "groups": groups,
        "sites": sites,
        "suppressed": suppressed,
        "max_gap": {
            "groups": _max_gap(groups, kinds, settings.flag_gap),
            "sites": _max_gap(sites, [list(sites)], settings.flag_gap),
        },
    }


def pooled_evaluation(
    replies: Mapping[str, SiteEvaluation],
    settings: EvalConfig,
    class_names: Sequence[str] = (),
) -> PooledEvaluation:
    """Pool the sites' evaluations; choose the threshold on val; report test at it."""
    site_metrics = {site: r.metrics for site, r in replies.items()}
    pooled = pool(list(site_metrics.values()))

    def pooled_scope(scope: str) -> SplitCounts | None:
        found = [r.counts[scope] for r in replies.values() if scope in r.counts]
        try:
            return pool_counts(found)
        except ValueError:  # sites disagree on the number of classes: no pooled curve
            return None

    val, test = pooled_scope("val"), pooled_scope("test")
    binary = pooled.num_classes == 2
    if not binary:
        evaluation = PooledEvaluation(
            at_operating_point(pooled, test, None),
            {
                s: at_operating_point(m, replies[s].counts.get("test"), None)
                for s, m in site_metrics.items()
            },
            None,
            "arg-max",
        )
    else:
        point = choose_threshold(val.positive if val else None, settings.target_sensitivity)
        evaluation = PooledEvaluation(
            at_operating_point(pooled, test, point.index),
            {
                site: at_operating_point(m, replies[site].counts.get("test"), point.index)
                for site, m in site_metrics.items()
            },
            point.threshold,
            point.rule,
        )
        site_tests = {s: r.counts["test"] for s, r in replies.items() if "test" in r.counts}
        groups = {
            g: c for g in keys.GROUPS if (c := pooled_scope(f"{keys.GROUP_SPLIT}.{g}")) is not None
        }
        if site_tests:
            evaluation.fairness = fairness(site_tests, groups, point, settings)
    evaluation.curves = {
        split: counts.to_json(class_names)
        for split, counts in (("val", val), ("test", test))
        if counts is not None
    }
    if test is not None:
        evaluation.calibration = test.calibration.to_json()
    return evaluation
