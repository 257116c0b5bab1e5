"""Numbers for people: each printed with a precision that fits it.

``number`` keeps ``significant`` digits whatever the magnitude (δ = 1e-05 never shows as
0.000; ε = 8 shows as 8.00), switching to exponent notation below 0.001 or from a million
on; ``ratio`` prints a metric in [0, 1] (AUC, sensitivity, ...) with a fixed 3 decimals,
where 0.000 is a true value. Missing values (None, NaN) print as ``n/a``.
"""

from __future__ import annotations

import math

MISSING = "n/a"


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def number(value: float | None, significant: int = 3) -> str:
    """``value`` with ``significant`` significant digits (``1e-05``, ``0.0123``, ``8.00``)."""
    if _missing(value):
        return MISSING
    value = float(value)  # type: ignore[arg-type]
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    if magnitude < -3 or magnitude >= 6:
        mantissa, _, exponent = f"{value:.{significant - 1}e}".partition("e")
        if "." in mantissa:
            mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{exponent}"
    return f"{value:.{max(0, significant - 1 - magnitude)}f}"


def ratio(value: float | None) -> str:
    """A metric in [0, 1] with 3 decimals (``0.897``); ``n/a`` when undefined."""
    return MISSING if _missing(value) else f"{float(value):.3f}"  # type: ignore[arg-type]
