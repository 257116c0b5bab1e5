"""Empirical privacy audit: does a site's claimed epsilon hold against real attacks?

- ``bounds``: attack counts -> empirical lower bound on epsilon (one-run and TPR/FPR
  conversions, Clopper-Pearson intervals);
- ``data``: the audited site's ordinary images and the canaries planted in it;
- ``canary``: the canary membership audit in one training run (the product's training code);
- ``inversion``: gradient inversion of a single-image update, without and with DP;
- ``ssim``: structural similarity of a reconstruction;
- ``run``: one audit (``AuditConfig`` -> ``AuditReport``); ``report``: table, JSON and PNGs.
"""

from typing import TYPE_CHECKING

from common._lazy import lazy_exports

if TYPE_CHECKING:
    from simulations.audit.report import write_report
    from simulations.audit.run import AuditConfig, AuditReport, run_audit

__all__ = ["AuditConfig", "AuditReport", "run_audit", "write_report"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "AuditConfig": "simulations.audit.run",
        "AuditReport": "simulations.audit.run",
        "run_audit": "simulations.audit.run",
        "write_report": "simulations.audit.report",
    },
)
