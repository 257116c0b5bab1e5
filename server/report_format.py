"""Numbers for the run report, each with a precision that fits it.

Rates and AUCs in [0, 1] get three decimals, except a tiny non-zero one, which is written in
scientific notation so it never shows as ``0.000`` (δ = 1e-05 stays ``1e-05``). Counts are
integers with thousands separators; missing values (``None``, NaN) are a dash.
"""

from __future__ import annotations

import math

MISSING = "\u2013"  # en dash


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def number(value: object) -> str:
    """Any number (or setting value) written so its information survives."""
    if _missing(value):
        return MISSING
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value == 0.0:
            return "0"
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        magnitude = abs(value)
        if magnitude < 1e-3 or magnitude >= 1e6:
            return f"{value:.3g}"
        if magnitude >= 100:
            return f"{value:,.1f}"
        return f"{value:.4g}"
    return str(value)


def rate(value: object) -> str:
    """A rate, AUC or other score in [0, 1]: three decimals; tiny non-zero values not hidden."""
    if _missing(value):
        return MISSING
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return str(value)
    value = float(value)
    if value != 0.0 and abs(value) < 5e-4:
        return f"{value:.2g}"
    return f"{value:.3f}"


def epsilon(value: object) -> str:
    """A privacy ε: two decimals (three significant digits when below 0.1)."""
    if _missing(value):
        return MISSING
    value = float(value)  # type: ignore[arg-type]
    if value != 0.0 and abs(value) < 0.1:
        return f"{value:.3g}"
    return f"{value:.2f}"


def count(value: object) -> str:
    """A count of images."""
    if _missing(value):
        return MISSING
    return f"{int(value):,}"  # type: ignore[call-overload]
