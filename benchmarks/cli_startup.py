"""Benchmark ``medfed`` start-up: wall time of ``--help`` in a fresh interpreter (issue 17).

Runs ``python -m medfed --help`` and ``python -m medfed site check --help`` N times each, in
subprocesses, and prints the median (and min/max) wall seconds per command, with the machine
load (``os.getloadavg``) before the runs. ``--help`` only parses arguments: nothing heavy
(torch, Flower, Ray, pydicom, …) should be imported for it.

    PYTHONPATH=. python benchmarks/cli_startup.py --repeat 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

COMMANDS = (("--help",), ("site", "check", "--help"))


def time_once(args: tuple[str, ...]) -> float:
    """Wall seconds of one ``python -m medfed ARGS`` (output discarded; must exit 0)."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "medfed", *args],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per command (default 5)")
    options = parser.parse_args()
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"load average (1, 5, 15 min): {load}")
    for args in COMMANDS:
        times = [time_once(args) for _ in range(options.repeat)]
        print(
            f"medfed {' '.join(args):22s} median {statistics.median(times):.3f} s  "
            f"(min {min(times):.3f}, max {max(times):.3f}, n={len(times)})"
        )


if __name__ == "__main__":
    main()
