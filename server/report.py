"""``report.html``: one self-contained page that tells what a run did and how good its model is.

Rendered from the run directory's files (``config.json``, ``metrics.jsonl``) with the jinja2
template ``server/report_template.py``; plots are matplotlib SVG inlined into the page,
so it needs nothing from the network. Sections: settings and data per site; pooled and
per-site AUC, sensitivity, specificity and F1 by round; the pooled ROC curve with the
operating point; the confusion matrix at that point; calibration; ε per site against the
budget; fairness between patient groups and sites; sites that declined, failed or were
rejected. What an older run did not record is said so, never invented.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import jinja2

from server import report_format as fmt
from server import report_plots as plots
from server.report_data import (
    CLINICAL,
    RunFiles,
    all_sites,
    calibration_of,
    class_curves,
    class_names,
    curves_of,
    epsilon_series,
    fairness_of,
    load_run,
    metric_series,
    no_site_test_split,
    official_points,
    operating_point,
    participation_events,
    site_summaries,
    site_values,
)
from server.report_template import REPORT_TEMPLATE

TEMPLATE = "report.html"
# round-record fields the page reads; older runs may lack some (shown as a dash)
ROUND_KEYS = (
    "round",
    "train_loss",
    "loss",
    "auc",
    "sensitivity",
    "specificity",
    "precision",
    "f1",
    "balanced_accuracy",
    "threshold",
    "threshold_rule",
    "epsilon_max",
    "train_sites",
    "elapsed_s",
)
SITE_COLUMNS = ("auc", "sensitivity", "specificity", "precision", "f1", "balanced_accuracy")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.DictLoader({TEMPLATE: REPORT_TEMPLATE}),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(rate=fmt.rate, number=fmt.number, epsilon=fmt.epsilon, count=fmt.count)
    return env


def _settings(config: Mapping[str, object]) -> dict[str, list[tuple[str, str]]]:
    """The flat settings grouped by section (``privacy.delta`` -> ``privacy``: ``delta``)."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for key, value in config.items():
        section, _, name = str(key).partition(".")
        text = "(none)" if value == "" else fmt.number(value)
        groups.setdefault(section if name else "other", []).append((name or section, text))
    return groups


def _float_setting(config: Mapping[str, object], key: str) -> float | None:
    value = config.get(key)
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _confusion(final: Mapping[str, object], config: Mapping[str, object]) -> dict | None:
    matrix = final.get("confusion")
    if not isinstance(matrix, list) or not matrix:
        return None
    rows = [[int(v) for v in row] for row in matrix]
    names = class_names(config, len(rows))
    totals = [sum(row) for row in rows]
    return {"names": names, "rows": list(zip(names, rows, totals, strict=True))}


def _privacy(rounds: Sequence[Mapping[str, object]], config: Mapping[str, object]) -> dict:
    enabled = bool(config.get("privacy.enabled", True))
    budget = _float_setting(config, "privacy.target-epsilon") if enabled else None
    delta = fmt.number(_float_setting(config, "privacy.delta"))
    lines = epsilon_series(rounds)
    colors = plots.site_colors(all_sites(rounds))
    return {
        "enabled": enabled,
        "budget": budget,
        "delta": delta,
        "accountant": config.get("privacy.accountant", "not recorded"),
        "plot": plots.epsilon_by_round(lines, colors, budget, delta) if lines else None,
        "lines": lines,
    }


def _by_round_tables(rounds: Sequence[Mapping[str, object]]) -> list[dict]:
    """One table per clinical metric: a row for pooled and each site, a column per round."""
    tables = []
    for metric in CLINICAL:
        series = metric_series(rounds, metric)
        tables.append(
            {
                "metric": plots.TITLES[metric],
                "rounds": series[0].rounds,
                "rows": [(s.label, s.values) for s in series],
            }
        )
    return tables


OFFICIAL_COLUMNS = (
    "val_auc",
    "auc",
    "balanced_accuracy",
    "sensitivity",
    "specificity",
    "threshold",
    "n_test",
)


def official_rows(rounds: Sequence[Mapping[str, object]]) -> list[tuple[str, dict[str, object]]]:
    """The official test split's figures (a run cut from a public pool) at the final round
    and at the best-official-val round, the figure comparable with published results; empty
    when the server scored no official split. A figure not recorded is ``None``."""
    return [
        (
            f"round {point.round}: best official val AUC"
            if point.best_val
            else f"final round {point.round}",
            {key: point.figures.get(key) for key in OFFICIAL_COLUMNS},
        )
        for point in official_points(rounds)
    ]


def render_report(
    title: str,
    config: Mapping[str, object],
    rounds: Sequence[Mapping[str, object]],
    *,
    created: str | None = None,
    versions: Mapping[str, str] | None = None,
    run_events: Sequence[Mapping[str, object]] = (),
) -> str:
    """The HTML text of a run report."""
    rounds = [
        {**dict.fromkeys(ROUND_KEYS), **r}
        for r in sorted(rounds, key=lambda r: int(r["round"]))  # type: ignore[call-overload]
    ]
    final: Mapping[str, object] = rounds[-1] if rounds else {}
    sites = all_sites(rounds)
    colors = plots.site_colors(sites)
    # sites holding no test split of their own send all-zero counts: nothing pooled to show
    no_site_tests = no_site_test_split(site_values(final))
    curves = {} if no_site_tests else curves_of(final)
    point = operating_point(final, curves.get("test"))
    threshold = final.get("threshold")
    calibration = None if no_site_tests else calibration_of(final)
    per_class = {} if no_site_tests else class_curves(final)  # multi-class: one-vs-rest test curves
    context = {
        "title": title,
        "created": created,
        "versions": dict(versions or {}),
        "rounds": rounds,
        "final": final,
        "num_rounds_planned": config.get("federation.num-rounds"),
        "sites": sites,
        "site_rows": site_summaries(rounds),
        "settings": _settings(config),
        "config": config,
        "metric_plot": (
            plots.metrics_by_round({m: metric_series(rounds, m) for m in CLINICAL}, colors)
            if rounds
            else None
        ),
        "round_tables": _by_round_tables(rounds) if rounds else [],
        "final_sites": {
            site: {**dict.fromkeys((*SITE_COLUMNS, "num_examples", "confusion")), **values}
            for site, values in site_values(final).items()
        },
        "site_columns": SITE_COLUMNS,
        "roc_plot": plots.roc(curves, point, per_class) if curves or per_class else None,
        "curves": curves,
        "point": point,
        "threshold": threshold,
        "threshold_rule": final.get("threshold_rule"),
        "official": official_rows(rounds),
        "no_site_tests": no_site_tests,
        "confusion": None if no_site_tests else _confusion(final, config),
        "calibration_plot": plots.calibration(calibration) if calibration else None,
        "privacy": _privacy(rounds, config),
        "fairness": None if no_site_tests else fairness_of(final),
        "events": participation_events(rounds, run_events),
        # the run's last event, when it is a stop not followed by a resume
        "stopped": run_events[-1]
        if run_events and run_events[-1].get("kind") == "stopped"
        else None,
    }
    return _environment().get_template(TEMPLATE).render(context)


def write_report(
    path: Path,
    title: str,
    config: Mapping[str, object],
    rounds: Sequence[Mapping[str, object]],
    *,
    created: str | None = None,
    versions: Mapping[str, str] | None = None,
) -> Path:
    """Write ``report.html`` and return its path."""
    path.write_text(
        render_report(title, config, rounds, created=created, versions=versions), encoding="utf-8"
    )
    return path


def render_run(run: RunFiles, title: str | None = None) -> str:
    """The report of a loaded run directory."""
    return render_report(
        title or f"medfed run {run.path.name}",
        run.config,
        run.rounds,
        created=run.created,
        versions=run.versions,
        run_events=run.run_events,
    )


def write_run_report(
    run_dir: Path | str, out: Path | str | None = None, *, title: str | None = None
) -> Path:
    """(Re-)render ``report.html`` from a run directory's files (``out``: another file)."""
    from server.rundir import REPORT_FILE

    run = load_run(run_dir)
    target = Path(out).expanduser() if out else run.path / REPORT_FILE
    target.write_text(render_run(run, title), encoding="utf-8")
    return target
