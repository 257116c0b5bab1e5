"""Run directories for report tests: round records carrying issue 13's contract fields.

``contract_run`` writes ``config.json`` and a ``metrics.jsonl`` whose lines hold what the
``roc`` branch adds to ``RoundRecord`` (``curves``, ``calibration``, ``fairness``,
``threshold``), computed from seeded synthetic scores with scikit-learn, so the page is
exercised on self-consistent numbers; ``old_run`` writes the fields of runs made before.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from common.config import MedfedConfig

SITES = ("hospital-a", "hospital-b", "hospital-c")
GRID = np.arange(101) / 100
AGES = ("0-17", "18-39", "40-59", "60-79", "80+")  # 0-17 is rare: suppressed below 10


def _grid_counts(labels: np.ndarray, scores: np.ndarray) -> dict[str, object]:
    called = scores[None, :] >= GRID[:, None]  # (101, n): positive at each cut-off
    positive = labels[None, :] == 1
    return {
        "thresholds": GRID.tolist(),
        "tp": (called & positive).sum(1).tolist(),
        "fp": (called & ~positive).sum(1).tolist(),
        "fn": (~called & positive).sum(1).tolist(),
        "tn": (~called & ~positive).sum(1).tolist(),
        "auc": float(roc_auc_score(labels, scores)),
    }


def _rates(labels: np.ndarray, called: np.ndarray) -> dict[str, float | int | None]:
    tp = int((called & (labels == 1)).sum())
    fn = int((~called & (labels == 1)).sum())
    tn = int((~called & (labels == 0)).sum())
    fp = int((called & (labels == 0)).sum())
    return {
        "n": len(labels),
        "sensitivity": tp / (tp + fn) if tp + fn else None,
        "specificity": tn / (tn + fp) if tn + fp else None,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


def _max_gap(rows: dict[str, dict], metric: str) -> dict[str, object]:
    values = {k: v[metric] for k, v in rows.items() if v[metric] is not None}
    low, high = min(values, key=values.get), max(values, key=values.get)  # type: ignore[arg-type]
    return {"value": values[high] - values[low], "between": [high, low]}


def _round_record(number: int, rng: np.random.Generator) -> dict[str, object]:
    """One round: three sites' test (and val) scores, pooled into the contract's fields."""
    strength = 0.6 + 0.5 * number  # the model separates the classes better each round
    site_data = {}
    for index, site in enumerate(SITES):
        n = 60 + 20 * index
        labels = (rng.random(n) < 0.35).astype(int)
        logits = strength * (2 * labels - 1) + rng.normal(0, 1.0 + 0.3 * index, n)
        sex = rng.choice(["F", "M"], n)
        age = rng.choice(AGES, n, p=[0.02, 0.28, 0.35, 0.3, 0.05])
        site_data[site] = (labels, 1 / (1 + np.exp(-logits)), sex, age)
    labels = np.concatenate([d[0] for d in site_data.values()])
    scores = np.concatenate([d[1] for d in site_data.values()])
    val_scores = np.clip(scores + rng.normal(0, 0.05, len(scores)), 0, 1)
    test, val = _grid_counts(labels, scores), _grid_counts(labels, val_scores)
    tpr = np.array(val["tp"]) / (np.array(val["tp"]) + np.array(val["fn"]))
    fpr = np.array(val["fp"]) / (np.array(val["fp"]) + np.array(val["tn"]))
    threshold = float(GRID[int(np.argmax(tpr - fpr))])  # Youden's J on pooled val
    pooled = _rates(labels, scores >= threshold)
    site_metrics, site_fair = {}, {}
    for site, (site_labels, site_scores, _, _) in site_data.items():
        rates = _rates(site_labels, site_scores >= threshold)
        site_fair[site] = {k: rates[k] for k in ("n", "sensitivity", "specificity")}
        site_metrics[site] = {
            "num_examples": rates["n"],
            "loss": 0.5,
            "auc": float(roc_auc_score(site_labels, site_scores)),
            "sensitivity": rates["sensitivity"],
            "specificity": rates["specificity"],
            "precision": rates["tp"] / max(rates["tp"] + rates["fp"], 1),
            "f1": 2 * rates["tp"] / max(2 * rates["tp"] + rates["fp"] + rates["fn"], 1),
            "balanced_accuracy": (rates["sensitivity"] + rates["specificity"]) / 2,
            "confusion": [[rates["tn"], rates["fp"]], [rates["fn"], rates["tp"]]],
        }
    groups, suppressed = {}, []
    sex = np.concatenate([d[2] for d in site_data.values()])
    age = np.concatenate([d[3] for d in site_data.values()])
    for name, mask in [
        *((f"sex={s}", sex == s) for s in ("F", "M")),
        *((f"age={a}", age == a) for a in AGES),
    ]:
        if mask.sum() < 10:
            suppressed.append(name)
            continue
        rates = _rates(labels[mask], scores[mask] >= threshold)
        groups[name] = {k: rates[k] for k in ("n", "sensitivity", "specificity")}
    edges = np.linspace(0, 1, 11)
    bins = np.clip(np.digitize(scores, edges[1:-1]), 0, 9)
    epsilon = {site: round(2.5 * number, 3) for site in SITES[:2]}
    epsilon["hospital-c"] = round(2.5 * min(number, 2), 3)
    return {
        "round": number,
        "train_sites": list(SITES if number < 3 else SITES[:2]),
        "eval_sites": list(SITES),
        "train_loss": 0.7 - 0.1 * number,
        "loss": 0.65 - 0.08 * number,
        "accuracy": (pooled["tp"] + pooled["tn"]) / pooled["n"],
        "auc": test["auc"],
        "epsilon_max": max(epsilon.values()),
        "epsilon": epsilon,
        "site_auc": {s: m["auc"] for s, m in site_metrics.items()},
        "site_accuracy": {s: 0.7 for s in SITES},
        "elapsed_s": 12.5 * number,
        "rejected": {"hospital-b": "update norm 41.2 exceeds 10 x the round's median"}
        if number == 2
        else {},
        "failed": {},
        "aggregated": True,
        "declined_sites": ["hospital-c"] if number == 3 else [],
        "declined": {"hospital-c": "privacy budget"} if number == 3 else {},
        "sensitivity": pooled["sensitivity"],
        "specificity": pooled["specificity"],
        "precision": pooled["tp"] / max(pooled["tp"] + pooled["fp"], 1),
        "f1": 2 * pooled["tp"] / (2 * pooled["tp"] + pooled["fp"] + pooled["fn"]),
        "balanced_accuracy": (pooled["sensitivity"] + pooled["specificity"]) / 2,
        "confusion": [[pooled["tn"], pooled["fp"]], [pooled["fn"], pooled["tp"]]],
        "site_metrics": site_metrics,
        "threshold": threshold,
        "threshold_rule": "youden",
        "curves": {"val": val, "test": test},
        "calibration": {
            "bin_edges": edges.tolist(),
            "count": np.bincount(bins, minlength=10).tolist(),
            "positives": np.bincount(bins, weights=labels, minlength=10).astype(int).tolist(),
            "mean_score": [
                float(scores[bins == b].mean()) if (bins == b).any() else None for b in range(10)
            ],
        },
        "fairness": {
            "min_group": 10,
            "flag_gap": 0.1,
            "groups": groups,
            "sites": site_fair,
            "suppressed": suppressed,
            "max_gap": {
                kind: {m: _max_gap(rows, m) for m in ("sensitivity", "specificity")}
                for kind, rows in (("groups", groups), ("sites", site_fair))
            },
        },
    }


def _write(run_dir: Path, config: MedfedConfig, lines: list[dict[str, object]]) -> Path:
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(
        json.dumps({"config": config.to_flat(), "created": "2026-11-30T12:00:00"})
    )
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return run_dir


def contract_run(run_dir: Path, rounds: int = 3, seed: int = 0) -> Path:
    """A three-site, ``rounds``-round run directory with every issue-13 field."""
    rng = np.random.default_rng(seed)
    config = MedfedConfig().replace(
        **{"federation.num-rounds": rounds, "federation.num-sites": len(SITES)}
    )
    return _write(run_dir, config, [_round_record(n, rng) for n in range(1, rounds + 1)])


def old_run(run_dir: Path, rounds: int = 2) -> Path:
    """The same run as recorded before issue 13: no curves, calibration, fairness, threshold."""
    lines = [_round_record(n, np.random.default_rng(n)) for n in range(1, rounds + 1)]
    for line in lines:
        for key in ("curves", "calibration", "fairness", "threshold", "threshold_rule"):
            del line[key]
        for values in line["site_metrics"].values():  # type: ignore[union-attr]
            values.pop("num_examples")
    config = MedfedConfig().replace(**{"federation.num-rounds": rounds})
    return _write(run_dir, config, lines)
