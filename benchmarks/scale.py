"""Scale benchmark for simulated federations (results go to BENCHMARKS.md).

1. Scale: ``medfed simulate`` on the 100-hospital quantity-skewed scenario with N = 10, 50,
   100 sites, the same number of sites sampled per round and the same parallelism; reports
   seconds per round (median of rounds 2.., round 1 also pays for starting the workers),
   start-up time, and the peak of the summed PSS of the whole process tree (driver, Ray's
   raylet / GCS / workers) sampled every 0.25 s; ``/usr/bin/time`` would see only the driver.
2. Overhead: the same local training without Flower: a plain loop over the same sampled
   sites, ``simulation.max-parallel`` worker processes calling the same ClientApp handlers
   (train, then evaluate) and a numpy FedAvg, compared with a simulated round of the same
   federation (IID sites, every site sampled, so both do identical work).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/scale.py --sites 10 50 100 --rounds 4
    PYTHONPATH=$PWD .venv/bin/python benchmarks/scale.py --images-per-site 40 --skip-overhead \
        --out benchmarks/results/scale-constant-work.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flwr.app import ArrayRecord, ConfigRecord, Context, RecordDict  # noqa: E402

from common import keys  # noqa: E402
from common.config import MedfedConfig  # noqa: E402
from common.models import build_model  # noqa: E402
from common.params import model_to_arrays  # noqa: E402
from common.round_settings import encode_round_settings  # noqa: E402
from simulations.scenario import load_scenario  # noqa: E402


# -- memory: summed PSS of a process tree ---------------------------------------------------
def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def _session(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])
    except (OSError, IndexError, ValueError):
        return None


def tree_pids(root: int) -> set[int]:
    """``root``, its descendants, and anything else in its session (Ray daemons)."""
    tree, found, stack = _children(), set(), [root]
    while stack:
        pid = stack.pop()
        if pid not in found:
            found.add(pid)
            stack.extend(tree.get(pid, []))
    session = _session(root)
    if session is not None:
        found |= {
            int(p) for p in os.listdir("/proc") if p.isdigit() and _session(int(p)) == session
        }
    return found


def pss_mib(pids: set[int]) -> float:
    """Summed proportional set size (MiB) of ``pids``."""
    total_kib = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kib += int(line.split()[1])
                    break
        except OSError:
            continue
    return total_kib / 1024


class PeakPss(threading.Thread):
    """Samples the summed PSS of a process tree until stopped; keeps the peak."""

    def __init__(self, root: int, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.root, self.interval, self.peak = root, interval, 0.0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, pss_mib(tree_pids(self.root)))
            self._done.wait(self.interval)

    def stop(self) -> float:
        self._done.set()
        self.join()
        return self.peak


# -- simulated runs ---------------------------------------------------------------------------
def simulate(scenario: str, overrides: dict[str, Any], runs: Path) -> dict[str, Any]:
    """Run ``medfed simulate`` in a fresh session; wall time, round times, peak PSS."""
    command = [sys.executable, "-m", "medfed", "simulate", scenario, "--runs-dir", str(runs)]
    for key, value in overrides.items():
        command += ["--set", f"{key}={value}"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    sampler = PeakPss(process.pid)
    sampler.start()
    output, _ = process.communicate()
    peak = sampler.stop()
    wall = time.monotonic() - started
    if process.returncode != 0:
        raise SystemExit(f"simulation failed:\n{output}")
    (run_dir,) = [p for p in runs.iterdir() if p.is_dir()]
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    ends = [float(line["elapsed_s"]) for line in lines]
    durations = [b - a for a, b in zip([0.0, *ends], ends, strict=False)]
    return {
        "wall_s": wall,
        "startup_s": wall - ends[-1],
        "round_s": durations,
        "steady_round_s": statistics.median(durations[1:] or durations),
        "peak_pss_mib": peak,
        "auc_last": lines[-1]["auc"],
    }


# -- plain loop: same handlers, no Flower ----------------------------------------------------
_SOURCES: Any = None  # one worker's site data, like one simulated ClientApp process


def _worker_init() -> None:
    import warnings

    import torch

    from client.site import SiteSources
    from simulations.sites import PartitionedPool

    global _SOURCES
    warnings.filterwarnings("ignore")  # Opacus' notices, as the simulation's workers hide them
    torch.set_num_threads(1)
    _SOURCES = SiteSources.create(partitions=PartitionedPool())


def _train_site(job: tuple[dict[str, Any], int, Any, RecordDict]) -> tuple[Any, RecordDict, int]:
    """One site's training through the ClientApp's handler; its node state goes back too."""
    from client.app import handle_train

    flat, site, arrays, state = job
    context = Context(
        run_id=1, node_id=site, node_config={"partition-id": site}, state=state, run_config={}
    )
    content = RecordDict({keys.ARRAYS: arrays, keys.CONFIG: ConfigRecord(flat)})
    reply = handle_train(content, context, _SOURCES)
    return reply[keys.ARRAYS], context.state, int(reply[keys.METRICS][keys.NUM_EXAMPLES])


def _evaluate_site(job: tuple[dict[str, Any], int, Any]) -> int:
    from client.app import handle_evaluate

    flat, site, arrays = job
    context = Context(
        run_id=1,
        node_id=site,
        node_config={"partition-id": site},
        state=RecordDict(),
        run_config={},
    )
    reply = handle_evaluate(
        RecordDict({keys.ARRAYS: arrays, keys.CONFIG: ConfigRecord(flat)}), context, _SOURCES
    )
    return int(reply[keys.METRICS][keys.NUM_EXAMPLES])


def plain_loop(config: MedfedConfig, rounds: int) -> list[float]:
    """Round times of the same local work (all sites train, then evaluate) without Flower."""
    import numpy as np
    import torch
    from flwr.app import Array

    torch.manual_seed(config.run.seed)
    arrays = model_to_arrays(build_model(config.model, config.data.channels))
    sites = list(range(config.federation.num_sites))
    states: dict[int, RecordDict] = {site: RecordDict() for site in sites}
    run_key = f"scale-plain-loop-{os.getpid()}-{time.time_ns()}"
    durations = []
    context = multiprocessing.get_context("spawn")
    with context.Pool(config.simulation.max_parallel, initializer=_worker_init) as pool:
        for server_round in range(1, rounds + 1):
            started = time.monotonic()
            # sites book their privacy spend to this run key
            flat = {**encode_round_settings(config, run_key), keys.SERVER_ROUND: server_round}
            results = pool.map(_train_site, [(flat, s, arrays, states[s]) for s in sites])
            total = sum(r[2] for r in results)
            mean = {
                name: sum(r[0][name].numpy() * (r[2] / total) for r in results) for name in arrays
            }
            arrays = ArrayRecord(
                {k: Array(np.asarray(v, dtype=np.float32)) for k, v in mean.items()}
            )
            for site, (_, state, _) in zip(sites, results, strict=True):
                states[site] = state
            pool.map(_evaluate_site, [(flat, s, arrays) for s in sites])
            durations.append(time.monotonic() - started)
    return durations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="hospitals-100-quantity")
    parser.add_argument("--sites", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--sampled", type=int, default=10, help="sites sampled per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--overhead-sites", type=int, default=10)
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument(
        "--images-per-site",
        type=int,
        default=0,
        help="IID sites of exactly K pool images each (same work per round for every N)",
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "scale.json")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.set)
    results: dict[str, Any] = {"command": " ".join(sys.argv), "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sites:
            overrides = {
                "federation.num-sites": n,
                "federation.num-rounds": args.rounds,
                "federation.fraction-train": args.sampled / n,
                "federation.fraction-evaluate": args.sampled / n,
                **extra,
            }
            if args.images_per_site:
                overrides.update(
                    {
                        "partition.kind": "iid",
                        "partition.max-images": n * args.images_per_site,
                        "partition.min-size": args.images_per_site,
                    }
                )
            case = simulate(args.scenario, overrides, Path(tmp) / f"scale-{n}")
            results[f"sites_{n}"] = case
            print(
                f"N={n:4d}  {case['steady_round_s']:.1f} s/round  startup {case['startup_s']:.1f} s"
                f"  peak PSS {case['peak_pss_mib']:.0f} MiB"
                f"  rounds {[round(x, 1) for x in case['round_s']]}",
                flush=True,
            )
        if not args.skip_overhead:
            n = args.overhead_sites
            overrides = {
                "federation.num-sites": n,
                "federation.num-rounds": args.rounds,
                "federation.fraction-train": 1.0,
                "federation.fraction-evaluate": 1.0,
                "partition.kind": "iid",
                **extra,
            }
            sim = simulate(args.scenario, overrides, Path(tmp) / "overhead")
            config = load_scenario(args.scenario).config(overrides)
            plain = plain_loop(config, args.rounds)
            steady_plain = statistics.median(plain[1:] or plain)
            results["overhead"] = {
                "sites": n,
                "simulated_round_s": sim["round_s"],
                "plain_round_s": plain,
                "ratio": sim["steady_round_s"] / steady_plain,
            }
            print(
                f"overhead ({n} IID sites, all sampled): "
                f"simulated {sim['steady_round_s']:.1f} s/round,"
                f" plain loop {steady_plain:.1f} s/round, ratio {results['overhead']['ratio']:.2f}",
                flush=True,
            )
    results["load_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
