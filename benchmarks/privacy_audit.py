"""The empirical privacy audit's table for BENCHMARKS.md (issue 14).

Runs ``simulations.audit.run_audit`` (the same code as ``medfed privacy audit``): a canary
membership audit in one training run of a site's real training code, without DP and with
DP-SGD at ``--epsilon``, then gradient inversion of a single-image update. Prints the
Markdown table (epsilon claimed, epsilon_lower with its interval, inversion SSIM), the wall
and CPU seconds, and writes ``audit.json`` + PNGs to ``--out`` and the JSON also to
``benchmarks/results/privacy_audit.json`` (``privacy_audit_quick.json`` with ``--quick``).

Usage:
    PYTHONPATH=. .venv/bin/python benchmarks/privacy_audit.py [--quick] [--epsilon 8]
        [--canaries 256] [--ordinary 100] [--seed 0] [--out /tmp/privacy-audit]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from simulations.audit.report import markdown_table, report_json, write_report
from simulations.audit.run import AuditConfig, run_audit

RESULTS = Path(__file__).resolve().parent / "results" / "privacy_audit.json"


def main() -> None:
    """Run one audit and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small audit of --quick")
    parser.add_argument("--epsilon", type=float, default=8.0)
    parser.add_argument("--canaries", type=int)
    parser.add_argument("--ordinary", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="/tmp/privacy-audit")
    args = parser.parse_args()
    settings: dict[str, object] = {"epsilon": args.epsilon, "seed": args.seed}
    if args.canaries is not None:
        settings["canaries"] = args.canaries
    if args.ordinary is not None:
        settings["ordinary"] = args.ordinary
    config = AuditConfig.quick(**settings) if args.quick else AuditConfig(**settings)  # type: ignore[arg-type]
    wall, cpu = time.perf_counter(), time.process_time()
    report = run_audit(config)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    write_report(report, Path(args.out))
    results = RESULTS.with_name("privacy_audit_quick.json") if args.quick else RESULTS
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(report_json(report), indent=2) + "\n")
    print(markdown_table(report))
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in report.seconds.items())
    print(f"\n{wall:.0f} s wall, {cpu:.0f} s CPU ({phases})")


if __name__ == "__main__":
    main()
