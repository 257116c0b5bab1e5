"""report.html shows clinical metrics per round and per site, and the confusion matrices."""

from __future__ import annotations

from server.report import render_report


def test_report_lists_clinical_metrics_and_confusion_matrices() -> None:
    site = {
        "auc": 0.91,
        "accuracy": 0.8,
        "balanced_accuracy": 0.75,
        "sensitivity": 0.9,
        "specificity": 0.6,
        "precision": 0.82,
        "f1": 0.857,
        "confusion": [[3, 2], [1, 9]],
    }
    rounds = [
        {
            "round": 1,
            "auc": 0.9,
            "accuracy": 0.8,
            "sensitivity": 0.9,
            "specificity": 0.6,
            "f1": 0.857,
            "balanced_accuracy": 0.75,
            "epsilon_max": 2.0,
            "epsilon": {"hospital-a": 2.0},
            "train_sites": ["hospital-a"],
            "declined_sites": ["hospital-b"],
            "confusion": [[3, 2], [1, 9]],
            "site_metrics": {"hospital-a": site},
        }
    ]

    page = render_report("run", {"privacy.delta": 1e-5}, rounds)

    for column in ("sensitivity", "specificity", "balanced_accuracy", "declined", "f1"):
        assert f"<th>{column}</th>" in page
    assert "<td>hospital-b</td>" in page  # an older run directory: names without reasons
    rounds[0]["declined"] = {"hospital-b": "app not approved"}
    assert "<td>hospital-b (app not approved)</td>" in render_report("run", {}, rounds)
    assert "<th>true 1</th><td>1</td><td>9</td>" in page  # confusion row, per site and pooled
    assert page.count("<th>pred 0</th>") == 2
