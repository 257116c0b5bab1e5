"""Human-readable site names shared by both sides (the server names sites in round lines).

A site reports its ``site-index`` (its ``partition-id``); the server and the simulations
turn it into a stable name with ``site_name``. The synthetic hospital generator uses the same
names for the folders it writes.
"""

from __future__ import annotations

SITE_NAMES = ("hospital-a", "hospital-b", "hospital-c", "hospital-d", "hospital-e")


def site_name(index: int) -> str:
    """Stable human-readable name of site ``index`` (``hospital-a`` … then ``hospital-006``)."""
    return SITE_NAMES[index] if index < len(SITE_NAMES) else f"hospital-{index + 1:03d}"
