"""Wall time of a real deployment run: SuperLink + N SuperNodes on 127.0.0.1, TLS + node auth.

Starts the federation with ``medfed.testing.federation.LocalFederation`` (the README recipe's
commands), on synthetic hospitals, and times ``flwr run`` for the given rounds, with and without
SecAgg+, optionally with the hospitals behind the Fleet-only nginx gateway. Prints one JSON
line per measurement; paste the numbers into BENCHMARKS.md.

    python benchmarks/deploy_rounds.py --rounds 3 --images 200 --secagg both [--gateway]
        [--execution warm|cold|flower]

``--execution``: ``warm`` (default) is the site's gate with one warm ClientApp process per
approved app; ``cold`` the gate starting Flower's ``flwr-clientapp`` per message; ``flower``
plain Flower (``--isolation subprocess``, no gate: any app runs).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common.data.synthetic import generate_site
from common.naming import site_name
from medfed.testing.federation import Hospital, LocalFederation

REPO_ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sites", type=int, default=2)
    parser.add_argument("--images", type=int, default=200, help="images per hospital")
    parser.add_argument("--secagg", choices=["off", "on", "both"], default="both")
    parser.add_argument("--port", type=int, default=19180, help="SuperLink port (+1.. nodes)")
    parser.add_argument("--gateway", action="store_true", help="hospitals dial nginx")
    parser.add_argument("--execution", choices=["warm", "cold", "flower"], default="warm")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="medfed-bench-") as tmp:
        root = Path(tmp)
        hospitals = [
            Hospital(
                site_name(i),
                generate_site(
                    root / "data" / site_name(i),
                    i,
                    seed=0,
                    num_images=args.images,
                    image_size=128,
                ),
            )
            for i in range(args.sites)
        ]
        ports = [args.port + 2 + i for i in range(args.sites)]
        gateway_port = args.port + 1 if args.gateway else None
        modes = {"off": [False], "on": [True], "both": [False, True]}[args.secagg]
        started = time.monotonic()
        with LocalFederation(
            root / "federation",
            hospitals,
            args.port,
            ports,
            gateway_port=gateway_port,
            approved_apps=[REPO_ROOT],
            approving=args.execution != "flower",
            warm=args.execution == "warm",
        ) as federation:
            startup = time.monotonic() - started
            for secagg in modes:
                begin = time.monotonic()
                result = federation.run(
                    REPO_ROOT,
                    {
                        "federation.num-rounds": args.rounds,
                        "secagg.enabled": secagg,
                        "run.runs-dir": str(root / "runs"),
                    },
                    timeout=1800,
                )
                print(
                    json.dumps(
                        {
                            "sites": args.sites,
                            "images_per_site": args.images,
                            "rounds": args.rounds,
                            "secagg": secagg,
                            "gateway": args.gateway,
                            "execution": args.execution,
                            "startup_s": round(startup, 1),
                            "flwr_run_s": round(time.monotonic() - begin, 1),
                            "ok": result.returncode == 0,
                        }
                    ),
                    flush=True,
                )


if __name__ == "__main__":
    main()
