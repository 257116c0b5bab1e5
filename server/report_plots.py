"""The run report's figures: matplotlib, returned as inline SVG text (no external assets).

Text stays text (``svg.fonttype = none``) so it takes the page's font and stays sharp; the
XML prolog, DOCTYPE, metadata and namespace declarations are dropped so the SVG can sit
inside the HTML page (the HTML parser puts it in the SVG namespace).
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from server.report_data import Calibration, Curve, OperatingPoint, Series

POOLED_COLOR = "#111111"
_STYLE = {
    "svg.fonttype": "none",
    "svg.hashsalt": "medfed-report",  # the same run gives the same page
    "font.family": "sans-serif",
    "font.size": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
}
MAX_LEGEND_SITES = 10
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
TITLES = {
    "auc": "ROC-AUC",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "f1": "F1",
}


def site_colors(sites: Sequence[str]) -> dict[str, str]:
    """A stable colour per site (tab10, then tab20 for larger federations)."""
    palette = plt.get_cmap("tab10" if len(sites) <= 10 else "tab20")
    return {site: matplotlib.colors.to_hex(palette(i % palette.N)) for i, site in enumerate(sites)}


def to_svg(fig: Figure) -> str:
    """The figure as an ``<svg>`` element to paste into HTML."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.DOTALL)
    # inline SVG in HTML needs no namespace declarations: the page then names no URL at all
    return re.sub(r'\s+xmlns(:xlink)?="[^"]*"', "", text, count=2)


def _points(series: Series) -> tuple[list[int], list[float]]:
    pairs = [(r, v) for r, v in zip(series.rounds, series.values, strict=True) if v is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _round_axis(ax: plt.Axes, rounds: Sequence[int]) -> None:
    ax.set_xlabel("round")
    if len(rounds) <= 10:
        ax.set_xticks(list(rounds))
    else:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=8, integer=True))


def metrics_by_round(lines: Mapping[str, list[Series]], colors: Mapping[str, str]) -> str:
    """Small multiples: one panel per metric, the pooled line bold, one thin line per site."""
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(1, len(lines), figsize=(3.1 * len(lines), 3.0), sharey=True)
        for ax, (metric, series) in zip(list(axes), lines.items(), strict=True):
            many = len(series) - 1 > MAX_LEGEND_SITES  # then sites are grey, the table names them
            x, y = _points(series[0])  # few sites: pooled wide and under them, else on top
            if many:
                ax.plot(x, y, "o-", lw=2.4, ms=3, color=POOLED_COLOR, label="pooled", zorder=3)
            else:
                ax.plot(x, y, "-", lw=5, color=POOLED_COLOR, alpha=0.45, label="pooled", zorder=1)
            for i, line in enumerate(series[1:]):
                x, y = _points(line)
                if many:
                    ax.plot(x, y, "-", lw=0.8, color="#b0b0b0", alpha=0.6)
                else:
                    ax.plot(
                        x,
                        y,
                        "-",
                        marker=MARKERS[i % len(MARKERS)],
                        mfc="none" if i % 2 == 0 else None,
                        lw=1.3,
                        ms=6 if i % 2 == 0 else 4,
                        color=colors.get(line.label),
                        label=line.label,
                        zorder=2,
                    )
            ax.set_title(TITLES.get(metric, metric))
            ax.set_ylim(-0.03, 1.03)
            _round_axis(ax, series[0].rounds)
        handles, labels = axes[0].get_legend_handles_labels()
        order = [labels.index("pooled"), *[i for i, lab in enumerate(labels) if lab != "pooled"]]
        fig.legend(
            [handles[i] for i in order],
            [labels[i] for i in order],
            loc="lower center",
            ncol=min(len(labels), 8),
            frameon=False,
            bbox_to_anchor=(0.5, -0.08 - 0.06 * ((len(labels) - 1) // 8)),
        )
        fig.tight_layout()
        return to_svg(fig)


def roc(
    curves: Mapping[str, Curve],
    point: OperatingPoint | None,
    class_curves: Mapping[str, Curve] | None = None,
) -> str:
    """The pooled ROC curves (test solid, val dashed) with the operating point marked."""
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(4.6, 4.4))
        ax.plot([0, 1], [0, 1], ":", color="#999999", lw=1, label="chance")
        for split, style in (("val", "--"), ("test", "-")):
            curve = curves.get(split)
            if curve is None:
                continue
            auc = "" if curve.auc is None else f" (AUC {curve.auc:.3f})"
            ax.plot(
                [0.0, *curve.fpr[::-1], 1.0],
                [0.0, *curve.tpr[::-1], 1.0],
                style,
                color="#1f77b4" if split == "test" else "#7f7f7f",
                lw=2 if split == "test" else 1.3,
                label=f"pooled {split}{auc}",
            )
        for name, curve in (class_curves or {}).items():
            auc = "" if curve.auc is None else f" (AUC {curve.auc:.3f})"
            ax.plot(curve.fpr[::-1], curve.tpr[::-1], "-", lw=1, label=f"{name} vs rest{auc}")
        if point is not None:
            ax.plot(
                point.fpr,
                point.tpr,
                "o",
                ms=9,
                color="#d62728",
                label=f"operating point (t = {point.threshold:.2f})",
                zorder=6,
            )
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_aspect("equal")
        ax.set_xlabel("1 \u2212 specificity (false-positive rate)")
        ax.set_ylabel("sensitivity (true-positive rate)")
        ax.legend(loc="lower right", fontsize=8.5)
        fig.tight_layout()
        return to_svg(fig)


def calibration(data: Calibration) -> str:
    """Reliability diagram (observed positive share per score bin) over a count histogram."""
    with plt.rc_context(_STYLE):
        fig, (top, bottom) = plt.subplots(
            2, 1, figsize=(4.6, 4.4), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
        )
        top.plot([0, 1], [0, 1], ":", color="#999999", lw=1, label="perfect calibration")
        x = [m for m, o in zip(data.mean_score, data.observed, strict=True) if o is not None]
        y = [o for o in data.observed if o is not None]
        top.plot(x, y, "o-", color="#1f77b4", lw=2, label="model (pooled test)")
        top.set_ylim(-0.02, 1.02)
        top.set_ylabel("observed positive share")
        top.legend(loc="upper left", fontsize=8.5)
        widths = [b - a for a, b in zip(data.bin_edges, data.bin_edges[1:], strict=False)]
        bottom.bar(
            data.bin_edges[:-1],
            data.count,
            width=widths,
            align="edge",
            color="#9ecae1",
            edgecolor="#4a7fa8",
        )
        bottom.set_ylabel("images")
        bottom.set_xlabel("predicted probability of the positive class")
        bottom.set_xlim(0, 1)
        fig.tight_layout()
        return to_svg(fig)


def epsilon_by_round(
    lines: Sequence[Series], colors: Mapping[str, str], budget: float | None, delta: str
) -> str:
    """ε spent by each site after each round, with the run's budget as a line."""
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(6.4, 3.4))
        top = 0.0
        for i, line in enumerate(lines):  # sites often spend alike: markers keep each visible
            x, y = _points(line)
            top = max([top, *y])
            if len(lines) > MAX_LEGEND_SITES:
                ax.plot(x, y, "-", lw=0.8, color="#8c8c8c", alpha=0.6)
                continue
            ax.plot(
                x,
                y,
                "-",
                marker=MARKERS[i % len(MARKERS)],
                lw=max(4.5 - 1.3 * i, 1.2),
                ms=max(11 - 2 * i, 4),
                mfc="none" if i % 2 == 0 else None,
                color=colors.get(line.label),
                label=line.label,
            )
        if budget is not None and math.isfinite(budget):
            ax.axhline(budget, color="#d62728", ls="--", lw=1.5, label=f"budget ε = {budget:g}")
            top = max(top, budget)
        ax.set_ylim(0, top * 1.12 if top else 1)
        ax.set_ylabel(f"ε spent (δ = {delta})")
        _round_axis(ax, lines[0].rounds if lines else [])
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, fontsize=8.5)
        fig.tight_layout()
        return to_svg(fig)
