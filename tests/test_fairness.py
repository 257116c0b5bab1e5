"""Fairness counts: patient groups from DICOM tags, small groups suppressed at site and server."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydicom.dataset import Dataset

from client.app import group_counts_to_wire
from common import keys
from common.config import EvalConfig
from common.data.groups import age_band, patient_groups
from common.data.sitedata import SiteData
from common.metrics import classification_metrics
from common.roc import choose_threshold, counts_from_wire, split_counts
from server.evaluation import SiteEvaluation, pooled_evaluation


def _dataset(**tags: str) -> Dataset:
    ds = Dataset()
    for name, value in tags.items():
        setattr(ds, name, value)
    return ds


def test_groups_come_from_sex_and_age_or_birth_and_study_date() -> None:
    assert patient_groups(_dataset(PatientSex="F", PatientAge="045Y")) == ("sex=F", "age=40-59")
    assert patient_groups(_dataset(PatientSex="M", PatientAge="006M")) == ("sex=M", "age=0-17")
    born = _dataset(PatientBirthDate="19500310", StudyDate="20260309")  # 75 years + 364 days
    assert patient_groups(born) == ("age=60-79",)
    assert patient_groups(_dataset(PatientSex="", PatientAge="garbage")) == ()
    assert age_band(80) == "80+" and age_band(17.9) == "0-17" and age_band(-1) is None


def _site(groups: list[tuple[str, ...]], rng: np.random.Generator) -> tuple[SiteData, np.ndarray]:
    n = len(groups)
    labels = torch.tensor(rng.integers(0, 2, n))
    scores = np.clip(rng.normal(0.35 + 0.3 * labels.numpy(), 0.15), 0, 1)
    data = SiteData(
        site_id="s",
        train_x=torch.zeros(1, 1, 8, 8),
        train_y=torch.zeros(1, dtype=torch.long),
        test_x=torch.zeros(n, 1, 8, 8),
        test_y=labels,
        test_groups=groups,
    )
    return data, np.stack([1 - scores, scores], axis=1)


def test_a_site_never_sends_a_group_smaller_than_the_minimum() -> None:
    rng = np.random.default_rng(0)
    groups = [("sex=F", "age=40-59")] * 12 + [("sex=M", "age=40-59")] * 5 + [("sex=M",)] * 4
    data, scores = _site(groups, rng)

    wire = group_counts_to_wire(data, scores, min_group_size=10)

    assert set(wire) <= keys.EVAL_METRICS_ALLOWED
    # every group's keys are there (Flower pools only equal keys) ...
    assert {k.split("-c")[0] for k in wire} == {f"test.{g}" for g in keys.GROUPS}
    sizes = {g: counts_from_wire(wire, f"test.{g}", 2).num_examples for g in keys.GROUPS}  # type: ignore[union-attr]
    # ... but only groups of at least 10 carry counts: sex=M (9 images) is all zeros
    assert sizes == {g: 0 for g in keys.GROUPS} | {"sex=F": 12, "age=40-59": 17}
    male = counts_from_wire(wire, "test.sex=M", num_classes=2)
    assert male is not None and not male.positive.tp.any() and not male.positive.fp.any()


def test_the_server_suppresses_pooled_groups_below_the_minimum_and_reports_gaps() -> None:
    rng = np.random.default_rng(1)
    replies = {}
    for name, size in (("hospital-a", 60), ("hospital-b", 40)):
        labels = rng.integers(0, 2, size)
        scores = np.clip(rng.normal(0.35 + 0.3 * labels, 0.15), 0, 1)
        probs = np.stack([1 - scores, scores], axis=1)
        female = np.arange(size) < size // 2
        counts = {
            "val": split_counts(labels, probs),
            "test": split_counts(labels, probs),
            "test.sex=F": split_counts(labels[female], probs[female]),
            "test.age=80+": split_counts(labels[:3], probs[:3]),  # 3 + 3 pooled: too few
        }
        metrics = classification_metrics(labels, probs, loss=0.4)
        replies[name] = SiteEvaluation(metrics, counts)

    result = pooled_evaluation(replies, EvalConfig(min_group_size=10, flag_gap=0.05))

    fairness = result.fairness
    assert fairness["min_group"] == 10
    assert set(fairness["groups"]) == {"sex=F"}
    assert fairness["groups"]["sex=F"]["n"] == 50
    assert fairness["suppressed"] == ["age=80+"]
    assert set(fairness["sites"]) == {"hospital-a", "hospital-b"}
    gap = fairness["max_gap"]["sites"]["sensitivity"]
    a, b = (fairness["sites"][s]["sensitivity"] for s in gap["between"])
    assert gap["value"] == pytest.approx(a - b) and gap["flagged"] == (gap["value"] > 0.05)
    pooled_val = replies["hospital-a"].counts["val"] + replies["hospital-b"].counts["val"]
    assert result.threshold == pytest.approx(choose_threshold(pooled_val.positive).threshold)
