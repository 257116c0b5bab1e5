"""What the run report shows, derived from a run directory's files (no HTML, no plotting).

Input: the flat settings (``config.json``) and the round records (``metrics.jsonl``, one
``RoundRecord.to_json()`` per line). Records of older runs lack the fields added in issue 13
(``curves``, ``calibration``, ``fairness``, ``threshold``); every function here copes with a
missing or empty field and the report then says "not recorded for this run".
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import ConfigError

Record = Mapping[str, object]
CLINICAL = ("auc", "sensitivity", "specificity", "f1")
OFFICIAL_LABEL = "official test (server)"


@dataclass(frozen=True)
class RunFiles:
    """A run directory's report inputs."""

    path: Path
    config: dict[str, object]
    rounds: list[dict[str, object]]
    created: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    # the run's own events (``run-events.jsonl``): resumed / stopped after a round
    run_events: list[dict[str, object]] = field(default_factory=list)


def load_run(path: Path | str) -> RunFiles:
    """Read ``config.json`` and ``metrics.jsonl``; ``ConfigError`` (one line) if not a run."""
    from server.rundir import CONFIG_FILE, EVENTS_FILE, METRICS_FILE

    run = Path(path).expanduser().resolve()
    if not run.is_dir():
        raise ConfigError(f"{run} is not a directory")
    config_file = run / CONFIG_FILE
    if not config_file.is_file():
        raise ConfigError(f"{run} is not a medfed run directory (no {CONFIG_FILE})")
    try:
        stored = json.loads(config_file.read_text())
        config = dict(stored["config"])
    except (OSError, ValueError, KeyError, TypeError) as problem:
        raise ConfigError(f"{config_file} cannot be read: {problem}") from None
    rounds: list[dict[str, object]] = []
    metrics_file = run / METRICS_FILE
    if metrics_file.is_file():
        for number, line in enumerate(metrics_file.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as problem:
                raise ConfigError(f"{metrics_file} line {number}: not JSON ({problem})") from None
            if not isinstance(record, dict) or "round" not in record:
                raise ConfigError(f"{metrics_file} line {number}: not a round record")
            rounds.append(record)
    versions = {
        name: str(stored[f"{name}_version"])
        for name in ("flwr", "torch")
        if f"{name}_version" in stored
    }
    return RunFiles(
        run, config, rounds, stored.get("created"), versions, _events(run / EVENTS_FILE)
    )


def _events(file: Path) -> list[dict[str, object]]:
    """The run's events; a line cut short by a crash is skipped, not fatal."""
    if not file.is_file():
        return []
    events = []
    for line in file.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and isinstance(event.get("after_round"), int):
            events.append(event)
    return events


def _dict(value: object) -> dict[str, object]:
    return dict(value) if isinstance(value, Mapping) else {}


def _float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if value != value else float(value)  # NaN -> None


def class_names(config: Mapping[str, object], num_classes: int) -> list[str]:
    """The class names from ``data.class-names`` (or ``class 0``, ``class 1``…)."""
    names = [n.strip() for n in str(config.get("data.class-names") or "").split(",") if n.strip()]
    if len(names) != num_classes:
        names = [f"class {k}" for k in range(num_classes)]
    return names


def site_values(record: Record) -> dict[str, dict[str, object]]:
    """Per-site metrics of one round (older runs: AUC and accuracy only)."""
    metrics = {site: _dict(v) for site, v in _dict(record.get("site_metrics")).items()}
    for name in ("auc", "accuracy"):
        for site, value in _dict(record.get(f"site_{name}")).items():
            metrics.setdefault(site, {}).setdefault(name, value)
    return metrics


def no_site_test_split(site_metrics: Mapping[str, Mapping[str, object]]) -> bool:
    """True when sites evaluated a round (``site_metrics``: site -> its figures) but none
    holds a test image of its own (``data.test-fraction = 0`` and no test folder): the pooled
    figures are empty, not low."""
    counts = [values.get("num_examples") for values in site_metrics.values()]
    return bool(counts) and all(count == 0 for count in counts)


def all_sites(rounds: Sequence[Record]) -> list[str]:
    """Every site named anywhere in the run, sorted."""
    names: set[str] = set()
    for record in rounds:
        for key in ("train_sites", "eval_sites", "declined_sites"):
            value = record.get(key)
            names.update(value if isinstance(value, list) else [])
        for key in ("epsilon", "declined", "failed", "rejected"):
            names.update(_dict(record.get(key)))
        names.update(site_values(record))
        names.update(_dict(_dict(record.get("fairness")).get("sites")))
    return sorted(str(n) for n in names)


@dataclass(frozen=True)
class SiteSummary:
    """One site's data and participation over the run."""

    site: str
    test_images: int | None
    positives: int | None
    negatives: int | None
    trained: int
    declined: int
    failed: int
    rejected: int
    epsilon: float | None


def site_summaries(rounds: Sequence[Record]) -> list[SiteSummary]:
    """Per site: its test images (latest evaluation), rounds trained / missed, last ε."""
    rows = []
    for site in all_sites(rounds):
        images = positives = negatives = None
        last_epsilon = None
        counts = {"trained": 0, "declined": 0, "failed": 0, "rejected": 0}
        for record in rounds:
            values = site_values(record).get(site, {})
            if values.get("num_examples") is not None:
                images = int(values["num_examples"])  # type: ignore[call-overload]
            confusion = values.get("confusion")
            if isinstance(confusion, list) and len(confusion) == 2:
                negatives, positives = (int(sum(row)) for row in confusion)
                if values.get("num_examples") is None:  # older runs: the matrix has them all
                    images = negatives + positives
            if site in (record.get("train_sites") or []):  # type: ignore[operator]
                counts["trained"] += 1
            declined = set(_dict(record.get("declined"))) | set(
                record.get("declined_sites") or []  # type: ignore[arg-type]
            )
            counts["declined"] += site in declined
            counts["failed"] += site in _dict(record.get("failed"))
            counts["rejected"] += site in _dict(record.get("rejected"))
            spent = _float(_dict(record.get("epsilon")).get(site))
            if spent is not None:
                last_epsilon = spent
        rows.append(SiteSummary(site, images, positives, negatives, **counts, epsilon=last_epsilon))
    return rows


@dataclass(frozen=True)
class Series:
    """Values of one line in a by-round plot (``None`` where not recorded)."""

    label: str
    rounds: list[int]
    values: list[float | None]


def metric_series(rounds: Sequence[Record], metric: str) -> list[Series]:
    """The pooled line first, then the official test split scored on the server (runs cut
    from a public pool, ``server.public_eval``), then one line per site, of ``metric``."""
    numbers = [int(r["round"]) for r in rounds]  # type: ignore[call-overload]
    lines = [Series("pooled", numbers, [_float(r.get(metric)) for r in rounds])]
    official = [_float(_dict(r.get("official")).get(metric)) for r in rounds]
    if any(v is not None for v in official):
        lines.append(Series(OFFICIAL_LABEL, numbers, official))
    for site in all_sites(rounds):
        values = [_float(site_values(r).get(site, {}).get(metric)) for r in rounds]
        if any(v is not None for v in values):
            lines.append(Series(site, numbers, values))
    return lines


def epsilon_series(rounds: Sequence[Record]) -> list[Series]:
    """ε spent by each site after each round (``None`` where the site did not report)."""
    numbers = [int(r["round"]) for r in rounds]  # type: ignore[call-overload]
    lines = []
    for site in all_sites(rounds):
        values = [_float(_dict(r.get("epsilon")).get(site)) for r in rounds]
        if any(v is not None for v in values):
            lines.append(Series(site, numbers, values))
    return lines


@dataclass(frozen=True)
class Event:
    """A site that did not contribute to a round, and why."""

    round: int
    site: str
    kind: str  # "declined", "failed", "rejected", "not evaluated"; "resumed" / "stopped" (run)
    reason: str


def participation_events(
    rounds: Sequence[Record], run_events: Sequence[Record] = ()
) -> list[Event]:
    """What happened in every round: declined, failed, rejected and unevaluated sites with
    their reasons, a round whose global model was kept, and the run's own events (resumed
    or stopped after a round), in round order."""
    events = [
        Event(int(e["after_round"]) + 1, "(run)", str(e.get("kind", "")), str(e.get("detail", "")))  # type: ignore[call-overload]
        for e in run_events
    ]
    for record in rounds:
        number = int(record["round"])  # type: ignore[call-overload]
        why = _dict(record.get("declined"))
        declined = sorted(set(why) | set(record.get("declined_sites") or []))  # type: ignore[arg-type]
        events += [
            Event(number, s, "declined", str(why.get(s) or "not recorded")) for s in declined
        ]
        for kind in ("failed", "rejected"):
            for site, reason in sorted(_dict(record.get(kind)).items()):
                events.append(Event(number, site, kind, str(reason) or "not recorded"))
        for site, reason in sorted(_dict(record.get("eval_missed")).items()):
            events.append(Event(number, site, "not evaluated", str(reason) or "not recorded"))
        if record.get("aggregated") is False:
            events.append(Event(number, "(all)", "model kept", "too few valid updates"))
    return sorted(events, key=lambda e: e.round)


@dataclass(frozen=True)
class Curve:
    """A pooled ROC curve from threshold-grid counts."""

    split: str
    thresholds: list[float]
    fpr: list[float]
    tpr: list[float]
    auc: float | None


def _rates(numerator: int, other: int) -> float:
    total = numerator + other
    return numerator / total if total else float("nan")


def roc_curve(counts: Record, split: str) -> Curve | None:
    """FPR/TPR at each grid cut-off from the pooled ``tp``/``fp``/``fn``/``tn`` counts."""
    try:
        tp, fp, fn, tn = (list(counts[k]) for k in ("tp", "fp", "fn", "tn"))  # type: ignore[call-overload]
        thresholds = [float(t) for t in counts["thresholds"]]  # type: ignore[attr-defined]
    except (KeyError, TypeError):
        return None
    if not thresholds or not len(tp) == len(fp) == len(fn) == len(tn) == len(thresholds):
        return None
    fpr = [_rates(int(f), int(t)) for f, t in zip(fp, tn, strict=True)]
    tpr = [_rates(int(t), int(f)) for t, f in zip(tp, fn, strict=True)]
    return Curve(split, thresholds, fpr, tpr, _float(counts.get("auc")))


def curves_of(record: Record) -> dict[str, Curve]:
    """The pooled positive-class curves of a round, by split ("test", "val")."""
    curves = {}
    for split, counts in _dict(record.get("curves")).items():
        curve = roc_curve(_dict(counts), split)
        if curve is not None:
            curves[split] = curve
    return curves


def class_curves(record: Record) -> dict[str, Curve]:
    """Multi-class: the one-vs-rest test curve of each class."""
    classes = _dict(_dict(_dict(record.get("curves")).get("test")).get("classes"))
    curves = {name: roc_curve(_dict(counts), "test") for name, counts in classes.items()}
    return {name: c for name, c in curves.items() if c is not None}


@dataclass(frozen=True)
class OperatingPoint:
    """The chosen threshold and where it sits on the test curve."""

    threshold: float
    rule: str
    fpr: float
    tpr: float


def operating_point(record: Record, curve: Curve | None) -> OperatingPoint | None:
    """The grid point nearest the round's threshold on ``curve`` (None: arg-max or absent)."""
    threshold = _float(record.get("threshold"))
    if threshold is None or curve is None:
        return None
    index = min(range(len(curve.thresholds)), key=lambda i: abs(curve.thresholds[i] - threshold))
    return OperatingPoint(
        threshold,
        str(record.get("threshold_rule") or "not recorded"),
        curve.fpr[index],
        curve.tpr[index],
    )


@dataclass(frozen=True)
class Calibration:
    """Reliability: the observed positive share against the mean score, per bin."""

    bin_edges: list[float]
    count: list[int]
    mean_score: list[float | None]
    observed: list[float | None]


def calibration_of(record: Record) -> Calibration | None:
    """The pooled calibration counts of a round, or None when not recorded."""
    data = _dict(record.get("calibration"))
    try:
        edges = [float(e) for e in data["bin_edges"]]  # type: ignore[attr-defined]
        counts = [int(c) for c in data["count"]]  # type: ignore[attr-defined]
        positives = [int(p) for p in data["positives"]]  # type: ignore[attr-defined]
        means = [_float(m) for m in data["mean_score"]]  # type: ignore[attr-defined]
    except (KeyError, TypeError, ValueError):
        return None
    if len(edges) != len(counts) + 1 or not len(counts) == len(positives) == len(means):
        return None
    observed = [p / c if c else None for p, c in zip(positives, counts, strict=True)]
    means = [m if c else None for m, c in zip(means, counts, strict=True)]
    return Calibration(edges, counts, means, observed)


@dataclass(frozen=True)
class FairRow:
    """One group's (or site's) sensitivity and specificity at the operating threshold."""

    name: str
    n: int | None
    sensitivity: float | None
    specificity: float | None
    flagged: tuple[str, ...] = ()  # the metrics whose largest gap this row is part of


@dataclass(frozen=True)
class Gap:
    """The largest difference of one metric between two groups (or sites)."""

    metric: str
    value: float
    between: tuple[str, ...]
    flagged: bool


@dataclass(frozen=True)
class FairTable:
    """Groups or sites, their largest gaps and which rows those gaps involve."""

    kind: str  # "groups" or "sites"
    rows: list[FairRow]
    gaps: list[Gap]


@dataclass(frozen=True)
class Fairness:
    """The fairness section: a table for patient groups and one for sites."""

    flag_gap: float | None
    min_group: int | None
    tables: list[FairTable]
    suppressed: list[str]


def fairness_of(record: Record) -> Fairness | None:
    """The round's fairness counts with the largest gaps flagged above ``flag_gap``."""
    data = _dict(record.get("fairness"))
    if not data:
        return None
    flag_gap = _float(data.get("flag_gap"))
    max_gap = _dict(data.get("max_gap"))
    tables = []
    for kind in ("groups", "sites"):
        gaps = []
        for metric, gap in _dict(max_gap.get(kind)).items():
            value = _float(_dict(gap).get("value"))
            if value is None:
                continue
            between = tuple(str(b) for b in (_dict(gap).get("between") or []))  # type: ignore[union-attr]
            gaps.append(Gap(metric, value, between, flag_gap is not None and value > flag_gap))
        rows = []
        for name, values in _dict(data.get(kind)).items():
            values = _dict(values)
            flagged = tuple(g.metric for g in gaps if g.flagged and name in g.between)
            n = values.get("n")
            rows.append(
                FairRow(
                    name,
                    int(n) if isinstance(n, (int, float)) else None,
                    _float(values.get("sensitivity")),
                    _float(values.get("specificity")),
                    flagged,
                )
            )
        if rows or gaps:
            tables.append(FairTable(kind, rows, gaps))
    min_group = data.get("min_group")
    return Fairness(
        flag_gap,
        int(min_group) if isinstance(min_group, (int, float)) else None,
        tables,
        [str(s) for s in (data.get("suppressed") or [])],  # type: ignore[union-attr]
    )


def best_by_val(history: Sequence[Mapping[str, object]]) -> tuple[int, Mapping[str, object]] | None:
    """The round whose official val AUC is highest (earliest on ties) and its figures."""
    best: tuple[int, Mapping[str, object]] | None = None
    best_auc = -math.inf
    for line in history:
        official = line.get("official") or {}
        auc = official.get("val_auc") if isinstance(official, Mapping) else None
        if isinstance(auc, int | float) and auc > best_auc:
            best_auc = float(auc)
            best = (int(line["round"]), official)  # type: ignore[call-overload]
    return best


@dataclass(frozen=True)
class OfficialPoint:
    """The official split's figures (``server.public_eval``) of one round worth showing."""

    round: int
    best_val: bool  # True: the round with the best official val AUC; False: the final round
    figures: Mapping[str, object]


def official_points(rounds: Sequence[Mapping[str, object]]) -> list[OfficialPoint]:
    """The final round (when it recorded official figures), then the best-official-val round
    (when any round did): what the console and the report show of the official split."""
    points: list[OfficialPoint] = []
    final = rounds[-1] if rounds else {}
    figures = final.get("official")
    if isinstance(figures, Mapping) and any(value is not None for value in figures.values()):
        points.append(OfficialPoint(int(final["round"]), False, figures))  # type: ignore[call-overload]
    best = best_by_val(rounds)
    if best is not None:
        points.append(OfficialPoint(best[0], True, best[1]))
    return points
