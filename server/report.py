"""``report.html``: a plain, self-contained page with the per-round table and curves."""

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
        "accuracy",
        "auc",
        "epsilon_max",
        "train_sites",
        "failed",
        "rejected",
    ]
    header = "".join(f"<th>{c}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in columns) + "</tr>" for r in rounds
    )
    final = rounds[-1] if rounds else {}
    site_rows = "".join(
        f"<tr><td>{html.escape(site)}</td><td>{_fmt(auc)}</td>"
        f"<td>{_fmt(final.get('epsilon', {}).get(site))}</td></tr>"  # type: ignore[union-attr]
        for site, auc in (final.get("site_auc") or {}).items()  # type: ignore[union-attr]
    )
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
<h2>Final round per site</h2><table><tr><th>site</th><th>AUC</th><th>ε</th></tr>{site_rows}</table>
<h2>Configuration</h2><table>{settings}</table>
<p>Pooled AUC is the example-weighted mean of site AUCs; accuracy comes from summed
confusion counts; ε is per site (max shown per round), with its δ in the configuration.</p>
</body></html>
"""


def write_report(
    path: Path, title: str, config: dict[str, object], rounds: Sequence[dict[str, object]]
) -> Path:
    """Write ``report.html`` and return its path."""
    path.write_text(render_report(title, config, rounds))
    return path
