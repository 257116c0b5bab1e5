"""Resident memory of one ClientApp process over many DP rounds: oneDNN's cache bounded or not.

One process plays every hospital of a pool scenario (as a simulation worker does; a hospital's
warm ClientApp process plays one for a whole study): the real ClientApp
(``client.app.build_client_app``, with the simulation's ``PartitionedPool``), each site with its
own state directory, train + evaluate per round, the same global model every round. Each
variant runs in its own fresh process, one after the other: ``bounded`` (the product:
``client.onednn`` bounds oneDNN's primitive cache to 64 entries) and ``onednn-default`` (the
environment sets ``ONEDNN_PRIMITIVE_CACHE_CAPACITY=1024``, oneDNN's own default, which a site's
setting overrides in the product too).
Prints the RSS after rounds 1, 5, 10, … and the mean seconds per round after round 1 (round 1
calibrates every site's noise), as a Markdown table for BENCHMARKS.md.

Usage:
    PYTHONPATH=. .venv/bin/python benchmarks/client_memory.py [--scenario pneumonia-5-dirichlet-dp8]
        [--rounds 20] [--model small-cnn] [--variant bounded]
        [--out benchmarks/results/client_memory.json]

``--variant`` plays one variant in this process and prints its ``RESULT`` line (no table).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from flwr.app import Context, RecordDict
from flwr.clientapp import ClientApp
from flwr.supercore.task_identity import TaskIdentity
from site_messages import play_round  # benchmarks/ is this script's sys.path[0]

from client.app import build_client_app
from client.onednn import PRIMITIVE_CACHE_ENV
from common import keys
from common.config import MedfedConfig
from common.models import build_run_model
from common.params import model_to_arrays
from simulations.scenario import load_scenario
from simulations.sites import PartitionedPool

VARIANTS = {"bounded": {}, "onednn-default": {PRIMITIVE_CACHE_ENV: "1024"}}


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def play(scenario: str, rounds: int, model: str | None = None) -> dict[str, object]:
    """Every site of ``scenario`` for ``rounds`` rounds in this process: RSS and s/round
    (``model``: another registered model than the scenario's)."""
    torch.set_num_threads(1)  # a simulation worker's share of the cores
    workdir = Path(tempfile.mkdtemp(prefix="medfed-client-memory-"))
    overrides = {
        "data.synthetic-root": str(workdir / "synthetic"),
        "run.runs-dir": str(workdir / "runs"),
    }
    if model is not None:
        overrides["model.name"] = model
    config = load_scenario(scenario).config(overrides)
    app = build_client_app(
        partitions=PartitionedPool(), site_defaults={keys.NODE_REQUIRE_DP: False}
    )
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    contexts = [
        Context(
            run_id=1,
            node_id=10 + site,
            node_config={
                keys.NODE_PARTITION_ID: site,
                keys.NODE_STATE_DIR: str(workdir / f"state-{site}"),
            },
            state=RecordDict(),
            run_config={},
        )
        for site in range(config.federation.num_sites)
    ]
    rss: dict[int, float] = {}
    try:
        seconds = _rounds(app, config, contexts, rounds, rss)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "scenario": scenario,
        "model": config.model.name,
        "sites": len(contexts),
        "rss_mb": rss,
        "mean_round_s": statistics.mean(seconds[1:]) if len(seconds) > 1 else seconds[0],
    }


def _rounds(
    app: ClientApp,
    config: MedfedConfig,
    contexts: list[Context],
    rounds: int,
    rss: dict[int, float],
) -> list[float]:
    """Play ``rounds`` rounds of every site; note the RSS after rounds 1, 5, 10, …"""
    torch.manual_seed(0)
    arrays = model_to_arrays(build_run_model(config, config.data.channels))
    seconds: list[float] = []
    for server_round in range(1, rounds + 1):
        started = time.perf_counter()
        play_round(app, config, contexts, arrays, "memory", server_round)
        seconds.append(time.perf_counter() - started)
        if server_round == 1 or server_round % 5 == 0:
            rss[server_round] = _rss_mb()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="pneumonia-5-dirichlet-dp8")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--model", help="another registered model than the scenario's")
    parser.add_argument(
        "--variant", choices=VARIANTS, help="only this variant, in this process (no table)"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.variant:  # one variant, in this (fresh) process
        warnings.simplefilter("ignore")
        result = {"variant": args.variant, **play(args.scenario, args.rounds, args.model)}
        print("RESULT " + json.dumps(result))
        return
    results = []
    for variant, environment in VARIANTS.items():
        command = [sys.executable, __file__, "--scenario", args.scenario]
        command += ["--rounds", str(args.rounds), "--variant", variant]
        command += ["--model", args.model] if args.model else []
        output = subprocess.run(
            command, capture_output=True, text=True, check=True, env={**os.environ, **environment}
        ).stdout
        line = next(li for li in output.splitlines() if li.startswith("RESULT "))
        results.append(json.loads(line.removeprefix("RESULT ")))
    marks = list(results[0]["rss_mb"])
    print(
        "| variant | " + " | ".join(f"RSS after round {m} (MiB)" for m in marks) + " | s / round |"
    )
    print("|---" * (len(marks) + 2) + "|")
    for result in results:
        cells = " | ".join(f"{result['rss_mb'][m]:,.0f}" for m in marks)
        print(f"| {result['variant']} | {cells} | {result['mean_round_s']:.2f} |")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
