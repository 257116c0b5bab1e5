"""The audit's outputs: a table, ``audit.json`` and the reconstruction PNGs.

Infinite values (an interval open at the top, e.g. when every guess was right) are written
as ``null`` in JSON and as ``inf`` in the table.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

from simulations.audit.canary import CanaryAudit
from simulations.audit.inversion import Reconstruction
from simulations.audit.run import AuditReport

TABLE_COLUMNS = (
    "training",
    "ε claimed",
    "ε_lower (95%)",
    "attack ε [95% CI]",
    "ε_lower TPR/FPR",
    "correct / guesses",
    "inversion SSIM",
)


def _number(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "—"
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isinf(value) else round(value, 4)


def mean_ssim(reconstructions: list[Reconstruction]) -> float:
    """Mean SSIM over the attacked images (NaN if none)."""
    if not reconstructions:
        return math.nan
    return sum(r.ssim for r in reconstructions) / len(reconstructions)


def table_rows(report: AuditReport) -> list[tuple[str, ...]]:
    """One row per training condition, in ``TABLE_COLUMNS`` order."""
    rows = []
    for audit, rebuilt in (
        (report.without_dp, report.inversion_without_dp),
        (report.with_dp, report.inversion_with_dp),
    ):
        low, high = audit.epsilon_interval
        label = f"DP-SGD sigma={audit.noise_multiplier:.2f}, C={report.max_grad_norm:g}"
        rows.append(
            (
                label if audit.dp else "no DP",
                _number(audit.epsilon_claimed) if audit.dp else "∞ (none)",
                _number(audit.epsilon_lower),
                f"{_number(audit.epsilon_point)} [{_number(low)}, {_number(high)}]",
                _number(audit.rates_epsilon_lower),
                f"{audit.correct} / {audit.guesses}",
                _number(mean_ssim(rebuilt), 3),
            )
        )
    return rows


def markdown_table(report: AuditReport) -> str:
    """The table as Markdown (for BENCHMARKS.md)."""
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(report)]
    return "\n".join(lines)


def verdict(report: AuditReport) -> str:
    """One line: does the DP run's epsilon_lower stay at or below the claimed epsilon?"""
    audit = report.with_dp
    if audit.claim_refuted:
        return (
            f"claim refuted: the attack proves epsilon >= {audit.epsilon_lower:.2f}, above "
            f"the claimed {audit.epsilon_claimed:.2f} (a DP implementation or accounting bug)"
        )
    return (
        f"claim holds against this attack: epsilon_lower {audit.epsilon_lower:.2f} <= "
        f"claimed {audit.epsilon_claimed:.2f} (without DP the same attack proves "
        f"{report.without_dp.epsilon_lower:.2f})"
    )


def _audit_json(audit: CanaryAudit) -> dict[str, object]:
    data = asdict(audit)
    low, high = audit.epsilon_interval
    data["epsilon_interval"] = [_finite(low), _finite(high)]
    for key in ("epsilon_lower", "epsilon_point", "rates_epsilon_lower", "epsilon_claimed"):
        data[key] = _finite(data[key])  # type: ignore[arg-type]
    return data


def report_json(report: AuditReport) -> dict[str, object]:
    """Everything in ``audit.json`` (settings, both canary audits, inversion SSIMs)."""
    return {
        "settings": asdict(report.config),
        "claim_refuted": report.with_dp.claim_refuted,
        "method": {
            "membership": "one-run canary audit (Steinke, Nasr & Jagielski 2023), "
            "loss-based scores, Bonferroni over fixed guess fractions",
            "inversion": "inverting gradients (Geiping et al. 2020), cosine loss + TV, "
            "iDLG label inference",
        },
        "canary_audit": {
            "without_dp": _audit_json(report.without_dp),
            "with_dp": _audit_json(report.with_dp),
        },
        "inversion": {
            "max_grad_norm": report.max_grad_norm,
            "noise_multiplier": report.with_dp.noise_multiplier,
            "ssim_without_dp": [round(r.ssim, 4) for r in report.inversion_without_dp],
            "ssim_with_dp": [round(r.ssim, 4) for r in report.inversion_with_dp],
            "mean_ssim_without_dp": round(mean_ssim(report.inversion_without_dp), 4),
            "mean_ssim_with_dp": round(mean_ssim(report.inversion_with_dp), 4),
        },
        "seconds": {k: round(v, 1) for k, v in report.seconds.items()},
    }


def save_reconstructions(report: AuditReport, out: Path) -> list[Path]:
    """One PNG per attacked image: original, rebuilt without DP, rebuilt with DP."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    pairs = zip(report.inversion_without_dp, report.inversion_with_dp, strict=True)
    for index, (plain, private) in enumerate(pairs):
        figure, axes = plt.subplots(1, 3, figsize=(7.5, 2.8))
        panels = (
            (plain.original, "original"),
            (plain.reconstructed, f"rebuilt, no DP\nSSIM {plain.ssim:.3f}"),
            (
                private.reconstructed,
                f"rebuilt, DP sigma={report.with_dp.noise_multiplier:.2f}\nSSIM {private.ssim:.3f}",
            ),
        )
        for axis, (image, title) in zip(axes, panels, strict=True):
            axis.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            axis.set_title(title, fontsize=9)
            axis.axis("off")
        figure.tight_layout()
        path = out / f"inversion-{index}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        paths.append(path)
    return paths


def write_report(report: AuditReport, out: Path) -> list[Path]:
    """Write ``audit.json`` and the PNGs under ``out``; return the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "audit.json"
    json_path.write_text(json.dumps(report_json(report), indent=2, allow_nan=False) + "\n")
    return [json_path, *save_reconstructions(report, out)]
