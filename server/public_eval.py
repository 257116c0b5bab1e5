"""The global model on a public pool's official ``val`` / ``test`` splits, scored by the server.

Only for simulations cut from a public labelled pool (``partition.pool``, e.g. a MedMNIST
``.npz``). The hospitals are cut from one split of it (``partition.split``, ``train``); the
data set's official ``val`` and ``test`` arrays are public, never given to a site, and are
what published figures (MedMNIST's benchmark) are measured on. After every round the server
scores the global model on both (from Flower's ``evaluate_fn``, ``RoundRecorder.end_round``),
chooses the operating threshold on official ``val`` with the rule the sites' pooled figures
use (``eval.target-sensitivity``; Youden's J by default, on the same 1/100 grid) and reports
``test`` at it: exact ROC-AUC (binary; macro one-vs-rest for multi-class, as MedMNIST),
balanced accuracy, sensitivity, specificity and accuracy (multi-class: arg-max), plus the
``val`` AUC a model-selection rule may use. Nothing of a site's is read here.

``eval.server-split``: ``auto`` scores when the pool file holds ``val`` and ``test`` arrays and
the sites were not cut from either; ``official`` requires that (a one-line ``ConfigError``
otherwise, before round 1); ``off`` never scores.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord
from torch import nn

from common.config import MedfedConfig
from common.data.medmnist import to_model_tensor
from common.data.preprocess import model_logits
from common.errors import ConfigError
from common.metrics import classification_metrics, roc_auc
from common.models import build_model
from common.params import arrays_to_model
from common.roc import choose_threshold, split_counts

OFFICIAL_SPLITS = ("val", "test")
BATCH = 512


def _pool_arrays(pool: Path) -> set[str]:
    """Names of the arrays in the pool file (empty when it cannot be read)."""
    try:
        with np.load(pool, allow_pickle=False) as arrays:
            return set(arrays.files)
    except (OSError, ValueError, zipfile.BadZipFile):
        return set()


def _unavailable(config: MedfedConfig) -> str | None:
    """Why the pool's official splits cannot be scored (None: they can)."""
    spec = config.partition
    if not spec.pool:
        return "no partition.pool"
    if spec.split in OFFICIAL_SPLITS:
        return f"the sites were cut from the pool's '{spec.split}' split"
    names = _pool_arrays(Path(spec.pool))
    missing = [
        f"{split}_{kind}"
        for split in OFFICIAL_SPLITS
        for kind in ("images", "labels")
        if f"{split}_{kind}" not in names
    ]
    if missing:
        return f"{spec.pool} has no {', '.join(missing)}"
    return None


def server_split_enabled(config: MedfedConfig) -> bool:
    """Whether the server scores the official splits; ``ConfigError`` if required but impossible."""
    mode = config.eval.server_split
    if mode == "off":
        return False
    why = _unavailable(config)
    if why is not None and mode == "official":
        raise ConfigError(f"config key 'eval.server-split' = 'official': {why}")
    return why is None


@dataclass(frozen=True)
class _Split:
    images: torch.Tensor  # (N, C, H, W) in [0, 1]
    labels: np.ndarray  # (N,) int64


def _load_split(config: MedfedConfig, split: str) -> _Split:
    pool, data = Path(config.partition.pool), config.data
    with np.load(pool, allow_pickle=False) as arrays:
        images = arrays[f"{split}_images"]
        labels = arrays[f"{split}_labels"].reshape(-1).astype(np.int64)
    num_classes = config.model.num_classes
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ConfigError(
            f"partition.pool: {pool}: official '{split}' labels go up to {int(labels.max())} "
            f"but model.num-classes is {num_classes}"
        )
    return _Split(to_model_tensor(images, data.image_size, data.channels), labels)


class PublicEvaluator:
    """Scores a global model (an ``ArrayRecord``) on the pool's official val and test splits."""

    def __init__(self, config: MedfedConfig) -> None:
        self.num_classes = config.model.num_classes
        self.target_sensitivity = config.eval.target_sensitivity
        self.val = _load_split(config, "val")
        self.test = _load_split(config, "test")
        self.model: nn.Module = build_model(config.model, config.data.channels)

    @torch.no_grad()
    def _scores(self, images: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
        self.model.eval()
        logits = torch.cat(
            [
                model_logits(self.model, images[start : start + BATCH])
                for start in range(0, len(images), BATCH)
            ]
        )
        return torch.softmax(logits, dim=1).numpy(), logits

    def __call__(self, arrays: ArrayRecord) -> dict[str, object]:
        """Test metrics at the threshold chosen on val, and val's AUC (JSON-ready scalars)."""
        arrays_to_model(arrays, self.model)
        val_scores, _ = self._scores(self.val.images)
        test_scores, test_logits = self._scores(self.test.images)
        loss = float(nn.functional.cross_entropy(test_logits, torch.from_numpy(self.test.labels)))
        threshold: float | None = None
        if self.num_classes == 2:
            counts = split_counts(self.val.labels, val_scores)
            threshold = choose_threshold(counts.positive, self.target_sensitivity).threshold
        test = classification_metrics(
            self.test.labels, test_scores, loss, 0.5 if threshold is None else threshold
        )
        return {
            "val_auc": _finite(roc_auc(self.val.labels, val_scores)),
            "auc": _finite(test.auc),
            "balanced_accuracy": _finite(test.balanced_accuracy),
            "sensitivity": _finite(test.sensitivity),
            "specificity": _finite(test.specificity),
            "accuracy": _finite(test.accuracy),
            "loss": _finite(loss),
            "threshold": threshold,
            "n_val": len(self.val.labels),
            "n_test": len(self.test.labels),
        }


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def public_evaluator(config: MedfedConfig) -> PublicEvaluator | None:
    """The server's evaluator on the official splits, or None when ``eval.server-split``
    leaves them out (see the module docstring)."""
    return PublicEvaluator(config) if server_split_enabled(config) else None
