"""Ablation of test-time augmentation on the official splits, from a run's checkpoints (issue 19).

Test-time augmentation (TTA) scores each image as the mean of the global model's class
probabilities over a few fixed views of it: the image itself, shifted by ``--shift`` pixels
up, down, left and right (replicate padding, as ``client.augment_views`` trains), and, when
the run trained on mirrored views (``train.augment-flip``), the mirror images of those five.
It is post-processing of the released model on public data: no privacy cost.

As in ``benchmarks/ema_ablation.py``, every kept round's raw global model (``checkpoints/``)
is scored by the product's own evaluator (``server.public_eval.PublicEvaluator``: threshold
chosen on official val) with and without TTA; a run's figure is the official test score at
the round with the best official **val** AUC, and TTA is chosen only if it raises the mean
val AUC over the runs given. Nothing here looks at test to choose.

Usage:
    PYTHONPATH=. .venv/bin/python benchmarks/tta_ablation.py RUN_DIR [RUN_DIR ...] \\
        [--shift 2] [--from-round 1] --out benchmarks/results/tta_ablation.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import torch
from ema_ablation import best_val, mean_sd, run_config  # benchmarks/ is sys.path[0]
from torch.nn import functional

from common.config import MedfedConfig
from server.checkpoint import CHECKPOINT_DIR, read_checkpoint
from server.public_eval import PublicEvaluator


def fixed_views(images: torch.Tensor, shift: int, flip: bool) -> list[torch.Tensor]:
    """The image, its four ``shift``-pixel shifts and, with ``flip``, the five mirrored."""
    height, width = images.shape[-2:]
    padded = functional.pad(images, (shift, shift, shift, shift), mode="replicate")
    views = [images]
    for dy, dx in ((-shift, 0), (shift, 0), (0, -shift), (0, shift)):
        top, left = shift + dy, shift + dx
        views.append(padded[..., top : top + height, left : left + width])
    if flip:
        views += [view.flip(-1) for view in views]
    return views


class AugmentedEvaluator(PublicEvaluator):
    """``PublicEvaluator`` whose scores are the mean probabilities over ``fixed_views``."""

    def __init__(self, config: MedfedConfig, shift: int) -> None:
        super().__init__(config)
        self.shift, self.flip = shift, config.train.augment_flip

    def _scores(self, images: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
        score = super()._scores  # the plain evaluator's batched probabilities
        views = fixed_views(images, self.shift, self.flip)
        mean = np.mean([score(view)[0] for view in views], axis=0)
        log_probabilities = torch.from_numpy(np.log(np.clip(mean, 1e-12, None)))
        return mean, log_probabilities  # the test loss is taken on these


def scores(run_dir: Path, shift: int, from_round: int) -> dict[str, list[dict[str, object]]]:
    """Each kept round's official figures, without and with TTA."""
    config = run_config(run_dir)
    evaluators = {"none": PublicEvaluator(config), "tta": AugmentedEvaluator(config, shift)}
    result: dict[str, list[dict[str, object]]] = {name: [] for name in evaluators}
    for path in sorted((run_dir / CHECKPOINT_DIR).glob("round-*.npz")):
        checkpoint = read_checkpoint(path)
        if checkpoint.round < from_round:
            continue
        for name, evaluator in evaluators.items():
            figures = evaluator(checkpoint.array_record())
            result[name].append({"round": checkpoint.round, **figures})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (one per seed)")
    parser.add_argument("--shift", type=int, default=2, help="pixels each shifted view moves")
    parser.add_argument("--from-round", type=int, default=1, help="score rounds from this one")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    by_run = {str(run): scores(run, args.shift, args.from_round) for run in args.runs}
    rows = []
    for name in ("none", "tta"):
        picked = [best_val(history[name]) for history in by_run.values()]
        rows.append(
            {
                "tta": name,
                "val_auc": [float(p["val_auc"]) for p in picked],  # type: ignore[arg-type]
                "test_auc": [float(p["auc"]) for p in picked],  # type: ignore[arg-type]
                "balanced_accuracy": [float(p["balanced_accuracy"] or "nan") for p in picked],  # type: ignore[arg-type]
                "best_round": [int(p["round"]) for p in picked],  # type: ignore[call-overload]
            }
        )
    chosen = max(rows, key=lambda row: statistics.mean(row["val_auc"]))["tta"]  # type: ignore[arg-type]
    print("| TTA | official val AUC (best round) | test AUC @ best val round | bal. ACC | rounds |")
    print("|---|---|---|---|---|")
    for row in rows:
        mark = " (chosen on val)" if row["tta"] == chosen else ""
        print(
            f"| {row['tta']}{mark} | {mean_sd(row['val_auc'])} | {mean_sd(row['test_auc'])} | "  # type: ignore[arg-type]
            f"{mean_sd(row['balanced_accuracy'])} | "  # type: ignore[arg-type]
            f"{', '.join(map(str, row['best_round']))} |"  # type: ignore[call-overload]
        )
    if args.out is not None:
        summary = {"runs": list(by_run), "shift": args.shift, "from_round": args.from_round}
        args.out.write_text(
            json.dumps({**summary, "rows": rows, "chosen_on_val": chosen}, indent=2)
        )


if __name__ == "__main__":
    main()
