"""Seconds per DP round at one site, and where they go, as its privacy ledger grows.

Drives the real ClientApp in-process (``client.app.build_client_app``), as a SuperNode's
ClientApp process does: one synthetic hospital (``common.data.synthetic``), the DP recipe of
the quality table (one DP-SGD step per round, PRV accountant, eps = 8 over 120 planned
rounds), train + evaluate each round. Before the timed rounds the site's ledger is given
``--prior-records`` signed records of an earlier run (a site that has taken part in earlier
studies; 120 rounds per study), written through the site's own ``SitePrivacy.record``.
Prints the median seconds per round (train + evaluate) and the peak RSS for each ledger size,
as a Markdown table for BENCHMARKS.md.

Usage:
    PYTHONPATH=. .venv/bin/python benchmarks/site_round.py [--prior-records 0 1000]
        [--rounds 8] [--threads 2] [--out benchmarks/results/site_round.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from flwr.app import Context, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from site_messages import play_round  # benchmarks/ is this script's sys.path[0]

from client.app import build_client_app
from client.budget import SitePrivacy
from client.privacy_state import PrivacyLedgerStore
from common import keys
from common.config import MedfedConfig
from common.data.synthetic import generate_site
from common.models import build_run_model
from common.params import model_to_arrays

SITE_IMAGES = 200
PRIOR_ENTRY = (1.1, 0.5, 1)  # one DP step per round at q = 0.5, as in the DP recipe


def recipe(workdir: Path) -> MedfedConfig:
    """The quality table's DP recipe on a synthetic hospital (``pneumonia-5-dirichlet-dp8``)."""
    return MedfedConfig().replace(
        **{
            "data.image-size": 28,
            "data.synthetic-root": str(workdir / "synthetic"),
            "federation.num-rounds": 120,
            "strategy.name": "fedavgm",
            "train.local-steps": 1,
            "train.batches-per-epoch": 2,
            "train.learning-rate": 1.0,
            "train.momentum": 0.0,
            "run.runs-dir": str(workdir / "runs"),
        }
    )


def _rss_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(prior_records: int, rounds: int, workdir: Path) -> dict[str, float]:
    """Median seconds of a round (train + evaluate) at a site whose ledger already holds
    ``prior_records`` records of another run."""
    config = recipe(workdir)
    site = generate_site(workdir / "hospital-a", 0, seed=0, num_images=SITE_IMAGES, image_size=28)
    state = workdir / "state"
    # the earlier study is accounted with RDP only to write its records quickly
    earlier_privacy = config.replace(**{"privacy.accountant": "rdp"}).privacy
    earlier = SitePrivacy(PrivacyLedgerStore(state), "an-earlier-study", earlier_privacy, None)
    for number in range(prior_records):
        earlier.record(server_round=number % 120 + 1, entry=PRIOR_ENTRY, update_sha256="ab" * 32)
    app = build_client_app()
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    context = Context(
        run_id=1,
        node_id=7,
        node_config={keys.NODE_DATA_PATH: str(site), keys.NODE_STATE_DIR: str(state)},
        state=RecordDict(),
        run_config={},
    )
    torch.manual_seed(0)
    arrays = model_to_arrays(build_run_model(config, config.data.channels))
    seconds = []
    for server_round in range(1, rounds + 1):
        started = time.perf_counter()
        play_round(app, config, [context], arrays, "this-study", server_round)
        seconds.append(time.perf_counter() - started)
    # round 1 calibrates the run's noise (Opacus' search, once per run): not a steady round
    steady = seconds[1:] or seconds
    return {
        "prior_records": prior_records,
        "rounds": rounds,
        "first_round_s": seconds[0],
        "median_round_s": statistics.median(steady),
        "peak_rss_mb": _rss_peak_mb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prior-records", type=int, nargs="+", default=[0, 1000])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    rows = []
    for prior in args.prior_records:
        with tempfile.TemporaryDirectory() as workdir:
            rows.append(measure(prior, args.rounds, Path(workdir)))
    print("| ledger records before the run | s / round (median, rounds 2+) | round 1 s |")
    print("|---|---|---|")
    for row in rows:
        print(
            f"| {row['prior_records']:,} | {row['median_round_s']:.3f} "
            f"| {row['first_round_s']:.2f} |"
        )
    print(f"peak RSS {max(r['peak_rss_mb'] for r in rows):.0f} MiB")
    if args.out:
        args.out.write_text(json.dumps({"rounds": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
