"""How many per-sample gradients DP-SGD clips: is ``privacy.max-grad-norm`` a lever? (issue 19)

While every per-sample gradient is longer than the clipping bound C, DP-SGD's update is
``lr * (sum of the gradients' directions * C + noise * C) / batch``: C and the learning rate
then act only through their product, which the learning-rate choices already tuned, and the
bound is no lever of its own; once some gradients are shorter than C, it is. This
measures, for finished DP runs, each training image's per-sample gradient norm (Opacus' own
per-sample gradients, the run's loss) for the run's initial model (the same architecture,
seeded with the run's seed) and for its released ``model.pt``, on the first ``--images``
images of the run's pool (the official train split the sites were cut from; plain images, no
augmented views), and the share above the run's C.

Usage:
    PYTHONPATH=. .venv/bin/python benchmarks/clip_fraction.py RUN_DIR [RUN_DIR ...] \\
        [--images 512] --out benchmarks/results/clip_fraction.json
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from ema_ablation import run_config  # benchmarks/ is sys.path[0]
from opacus import GradSampleModule
from torch import nn

from client.train import unhook_opacus
from common.config import MedfedConfig
from common.data.medmnist import to_model_tensor
from common.data.preprocess import model_logits
from common.model_file import load_saved_model
from common.models import build_model


def per_sample_norms(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """The L2 norm of each image's gradient of its own cross-entropy, all parameters."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Full backward hook is firing")
        wrapped = GradSampleModule(model, loss_reduction="sum")
        loss = nn.functional.cross_entropy(model_logits(wrapped, images), labels, reduction="sum")
        loss.backward()
    squares = sum(
        p.grad_sample.flatten(1).pow(2).sum(1) for p in wrapped.parameters() if p.requires_grad
    )
    norms = torch.sqrt(squares).detach().numpy()
    unhook_opacus(wrapped)  # the model is used again (released after initial)
    return norms


def summary(norms: np.ndarray, bound: float) -> dict[str, float]:
    """Quantiles of the norms and the share the bound clips."""
    q10, q50, q90 = np.quantile(norms, [0.1, 0.5, 0.9])
    return {
        "norm_p10": float(q10),
        "norm_median": float(q50),
        "norm_p90": float(q90),
        "clipped_share": float((norms > bound).mean()),
    }


def pool_images(config: MedfedConfig, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` images and labels of the split the run's sites were cut from."""
    split = config.partition.split
    with np.load(config.partition.pool, allow_pickle=False) as arrays:
        images = arrays[f"{split}_images"][:count]
        labels = arrays[f"{split}_labels"][:count].reshape(-1).astype(np.int64)
    tensor = to_model_tensor(images, config.data.image_size, config.data.channels)
    return tensor, torch.from_numpy(labels)


def measure(run_dir: Path, count: int) -> dict[str, object]:
    """Norm quantiles and clipped share for the run's initial and released models."""
    config = run_config(run_dir)
    images, labels = pool_images(config, count)
    bound = config.privacy.max_grad_norm
    torch.manual_seed(config.run.seed)
    initial = build_model(config.model, config.data.channels)
    saved = load_saved_model(run_dir)
    released = build_model(config.model, config.data.channels)
    released.load_state_dict(saved.state_dict)
    return {
        "run": str(run_dir),
        "model": config.model.name,
        "max_grad_norm": bound,
        "images": len(labels),
        "initial": summary(per_sample_norms(initial, images, labels), bound),
        f"released (round {saved.round})": summary(
            per_sample_norms(released, images, labels), bound
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = [measure(run, args.images) for run in args.runs]
    for result in results:
        print(result["run"], result["model"], f"C = {result['max_grad_norm']}")
        for key, value in result.items():
            if isinstance(value, dict):
                print(
                    f"  {key:24s} per-sample norm p10 {value['norm_p10']:.2f} "
                    f"median {value['norm_median']:.2f} p90 {value['norm_p90']:.2f}  "
                    f"clipped {value['clipped_share']:.1%}"
                )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
