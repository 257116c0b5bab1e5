"""Fusion (images + clinical variables) vs image-only on the synthetic clinical task.

Per seed, one synthetic clinical hospital ("opacity" iff lesion AND age >= 60; see
``common.data.synthetic``) is generated and read through the real pipeline; ``small-cnn`` on
the images and ``fusion-cnn`` on images + ``age, sex, smoker, bmi`` are trained with the
same seed and the same local training code as the ClientApp (``simulations.fusion_task``),
without DP and with DP-SGD (Opacus, ε = 8, δ = 1e-5), and scored by test AUC. Small on
purpose (320 images of 32x32, one thread): the machine is shared. Prints a Markdown table
for BENCHMARKS.md and writes ``benchmarks/results/fusion.json``. Usage:
    PYTHONPATH=. .venv/bin/python benchmarks/fusion.py [--seeds 0 1 2] [--no-dp]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from simulations.fusion_task import FusionTask, compare

RESULTS = Path(__file__).resolve().parent / "results" / "fusion.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--images", type=int, default=FusionTask.images)
    parser.add_argument("--no-dp", action="store_true", help="skip the DP arm")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    settings = [False] if args.no_dp else [False, True]
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for dp in settings:
            for seed in args.seeds:
                started = time.perf_counter()
                task = FusionTask(images=args.images, seed=seed, dp=dp)
                auc = compare(Path(workdir), task)
                rows.append(
                    {"dp": dp, "seed": seed, **auc, "seconds": time.perf_counter() - started}
                )
                print(json.dumps(rows[-1]), flush=True)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=2))
    print("\n| training | seed | image-only AUC | fusion AUC | fusion - image-only |")
    print("|---|---|---|---|---|")
    for dp in settings:
        chosen = [r for r in rows if r["dp"] == dp]
        label = "DP-SGD ε=8" if dp else "no DP"
        for r in chosen:
            gain = r["fusion"] - r["image-only"]
            aucs = f"{r['image-only']:.3f} | {r['fusion']:.3f}"
            print(f"| {label} | {r['seed']} | {aucs} | {gain:+.3f} |")
        image = statistics.mean(r["image-only"] for r in chosen)
        fusion = statistics.mean(r["fusion"] for r in chosen)
        print(f"| {label} | mean | {image:.3f} | {fusion:.3f} | {fusion - image:+.3f} |")


if __name__ == "__main__":
    main()
