"""Fusion vs image-only on the synthetic clinical task, one site, same seeds (test + benchmark).

One synthetic clinical hospital (``common.data.synthetic``, ``clinical=True``: "opacity" iff
lesion AND age >= 60) is read through the real pipeline (DICOM -> tensors, clinical records
from header and ``labels.csv``), a val split is carved, and the same local training code the
ClientApp runs (``client.train.train_locally``, Opacus DP-SGD when ``dp``) trains
``small-cnn`` on the images alone and ``fusion-cnn`` on images + encoded clinical variables,
from the same seed. Returns each model's test AUC.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from client.clinical_inputs import clinical_features
from client.evaluate import evaluate_model
from client.train import plan_round, train_locally
from common.config import MedfedConfig
from common.data.sitedata import with_validation
from common.data.sites import load_site
from common.data.synthetic import generate_site
from common.models import build_run_model

COLUMNS = "age,sex,smoker=never|former|current,bmi"


@dataclass(frozen=True)
class FusionTask:
    """Size and training of one comparison."""

    images: int = 320
    image_size: int = 32
    epochs: int = 15
    batch_size: int = 32
    learning_rate: float = 0.1
    dp: bool = False
    target_epsilon: float = 8.0
    seed: int = 0
    site: int = 0


def task_config(task: FusionTask, fusion: bool) -> MedfedConfig:
    """The run config of one arm (fusion or image-only); everything else identical."""
    flat: dict[str, object] = {
        "data.image-size": task.image_size,
        "data.cache": False,
        "data.test-fraction": 0.3,
        "train.local-epochs": task.epochs,
        "train.batch-size": task.batch_size,
        "train.learning-rate": task.learning_rate,
        "train.momentum": 0.9,
        "privacy.enabled": task.dp,
        "privacy.target-epsilon": task.target_epsilon,
        "run.seed": task.seed,
    }
    if fusion:
        flat.update({"model.name": "fusion-cnn", "data.clinical-columns": COLUMNS})
    return MedfedConfig.from_flat(flat)


def run_arm(folder: Path, task: FusionTask, fusion: bool) -> float:
    """Test AUC of one arm trained locally on the site in ``folder``."""
    config = task_config(task, fusion)
    data = with_validation(
        load_site(folder, config.data, f"site-{task.site}"), config.eval.val_fraction, task.seed
    )
    clinical = clinical_features(data, config)
    extra = () if clinical is None else (clinical.train,)
    dataset = TensorDataset(data.train_x, *extra, data.train_y)
    torch.manual_seed(task.seed)
    model = build_run_model(config, data.in_channels)
    plan = plan_round(len(dataset), config.train, config.privacy, planned_rounds=1)
    train_locally(model, dataset, config.train, config.privacy, plan=plan)
    metrics = evaluate_model(
        model, data.test_x, data.test_y, tabular=None if clinical is None else clinical.test
    )
    return float(metrics.auc) if not math.isnan(metrics.auc) else 0.5


def compare(workdir: Path, task: FusionTask) -> dict[str, float]:
    """``{"image-only": auc, "fusion": auc}`` on one generated clinical site."""
    folder = workdir / f"clinical-{task.seed}-{task.site}-{task.images}-{task.image_size}"
    if not (folder / "labels.csv").exists():
        generate_site(
            folder,
            task.site,
            seed=task.seed,
            num_images=task.images,
            image_size=task.image_size,
            test_fraction=0.3,
            clinical=True,
        )
    return {
        "image-only": run_arm(folder, task, fusion=False),
        "fusion": run_arm(folder, task, fusion=True),
    }
