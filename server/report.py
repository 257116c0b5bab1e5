"""``report.html``: a plain, self-contained page with the per-round table and curves.

Clinical metrics (sensitivity, specificity, precision, F1, balanced accuracy, confusion
matrices) come per round pooled over sites and, for the final round, per site; see
``common.metrics`` for how sites are pooled.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, dict):  # rejected / failed: site -> reason; show the sites
        return html.escape(", ".join(value)) or "-"
    if isinstance(value, list):
        return html.escape(", ".join(map(str, value)))
    return html.escape(str(value))


def _confusion_html(matrix: object) -> str:
    """A small confusion-matrix table (rows = true class, columns = predicted)."""
    if not isinstance(matrix, list) or not matrix:
        return "-"
    head = "".join(f"<th>pred {j}</th>" for j in range(len(matrix)))
    rows = "".join(
        f"<tr><th>true {i}</th>" + "".join(f"<td>{int(v)}</td>" for v in row) + "</tr>"
        for i, row in enumerate(matrix)
    )
    return f"<table><tr><th></th>{head}</tr>{rows}</table>"


def _cell(record: dict[str, object], column: str) -> str:
    """One cell of the per-round table; declined sites carry why (older runs: names only)."""
    if column == "declined":
        why: dict[str, str] = record.get("declined") or {}  # type: ignore[assignment]
        sites: list[str] = record.get("declined_sites") or []  # type: ignore[assignment]
        named = [f"{site} ({why[site]})" if site in why else site for site in sites]
        return html.escape(", ".join(named)) or "-"
    return _fmt(record.get(column))


SITE_COLUMNS = ("auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "precision")


def _curves_png(rounds: Sequence[dict[str, object]]) -> str:
    numbers = [int(r["round"]) for r in rounds]  # type: ignore[call-overload]
    fig, ax_auc = plt.subplots(figsize=(7, 3.5))
    ax_auc.plot(numbers, [r["auc"] for r in rounds], "o-", color="tab:blue", label="pooled AUC")
    ax_auc.set_xlabel("round")
    ax_auc.set_ylabel("ROC-AUC", color="tab:blue")
    ax_auc.set_ylim(0.0, 1.0)
    ax_eps = ax_auc.twinx()
    eps = [r.get("epsilon_max") for r in rounds]
    if any(e is not None for e in eps):
        ax_eps.plot(numbers, eps, "s--", color="tab:red", label="max ε")
    ax_eps.set_ylabel("ε (max across sites)", color="tab:red")
    ax_auc.set_xticks(numbers)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def render_report(
    title: str, config: dict[str, object], rounds: Sequence[dict[str, object]]
) -> str:
    """The HTML text of a run report."""
    columns = [
        "round",
        "train_loss",
        "loss",
        "auc",
        "accuracy",
        "balanced_accuracy",
        "sensitivity",
        "specificity",
        "f1",
        "epsilon_max",
        "train_sites",
        "declined",
        "failed",
        "rejected",
    ]
    header = "".join(f"<th>{c}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(r, c)}</td>" for c in columns) + "</tr>" for r in rounds
    )
    final = rounds[-1] if rounds else {}
    site_metrics: dict[str, dict[str, object]] = final.get("site_metrics") or {}  # type: ignore[assignment]
    if not site_metrics:  # older run directories: AUC only
        site_metrics = {s: {"auc": a} for s, a in (final.get("site_auc") or {}).items()}  # type: ignore[union-attr]
    site_rows = "".join(
        f"<tr><td>{html.escape(site)}</td>"
        + "".join(f"<td>{_fmt(values.get(c))}</td>" for c in SITE_COLUMNS)
        + f"<td>{_fmt(values.get('f1'))}</td>"
        f"<td>{_fmt(final.get('epsilon', {}).get(site))}</td>"  # type: ignore[union-attr]
        f"<td>{_confusion_html(values.get('confusion'))}</td></tr>"
        for site, values in site_metrics.items()
    )
    site_header = "".join(f"<th>{c}</th>" for c in ("site", *SITE_COLUMNS, "f1", "ε", "confusion"))
    settings = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in config.items()
    )
    image = (
        f'<img alt="AUC and epsilon per round" src="data:image/png;base64,{_curves_png(rounds)}">'
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #999;padding:3px 8px;text-align:right}}</style></head>
<body><h1>{html.escape(title)}</h1>
<h2>Per round (pooled over sites)</h2><table><tr>{header}</tr>{body}</table>
{image if rounds else "<p>No completed rounds.</p>"}
<h2>Final round per site</h2><table><tr>{site_header}</tr>{site_rows}</table>
<h2>Final round pooled confusion matrix</h2>{_confusion_html(final.get("confusion"))}
<h2>Configuration</h2><table>{settings}</table>
<p>Pooled AUC is the example-weighted mean of site AUCs (an approximation of the AUC of pooled
scores: per-image scores never leave a site); accuracy, sensitivity, specificity, precision,
F1 and balanced accuracy come from the summed confusion matrices (binary: class 1 positive,
threshold 0.5; multi-class: macro one-vs-rest); ε is per site (max shown per round), with
its δ in the configuration. A declined site refused the round: "privacy budget" (the round
would exceed its ε budget), "site policy" (the run breaks the site's own privacy policy) or
"app not approved" (the site's gate refused to run this app's code at all).</p>
</body></html>
"""


def write_report(
    path: Path, title: str, config: dict[str, object], rounds: Sequence[dict[str, object]]
) -> Path:
    """Write ``report.html`` and return its path."""
    path.write_text(render_report(title, config, rounds))
    return path
