"""Server-side scoring of the global model on a public pool's official val / test splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from common.config import MedfedConfig
from common.data.medmnist import to_model_tensor
from common.data.preprocess import model_logits
from common.errors import ConfigError
from common.models import build_model
from common.params import model_to_arrays
from server.console import round_line
from server.public_eval import PublicEvaluator, server_split_enabled
from server.recorder import RoundRecorder
from server.report_data import best_by_val

RNG = np.random.default_rng(7)


def _pool(path: Path, classes: int, splits: tuple[str, ...] = ("train", "val", "test")) -> Path:
    arrays = {}
    for split, n in (("train", 40), ("val", 60), ("test", 80)):
        if split not in splits:
            continue
        labels = np.arange(n) % classes
        images = RNG.integers(0, 256, size=(n, 8, 8), dtype=np.uint8)
        images[labels == 1, :4] //= 3  # some signal for the model, not a perfect one
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels.reshape(-1, 1)
    np.savez(path, **arrays)
    return path


def _config(pool: Path, classes: int = 2, **extra: object) -> MedfedConfig:
    names = ",".join(f"c{k}" for k in range(classes))
    return MedfedConfig.from_flat(
        {
            "partition.pool": str(pool),
            "data.image-size": 8,
            "data.class-names": names,
            "model.num-classes": classes,
            **extra,
        }
    )


def _scores(config: MedfedConfig, model: torch.nn.Module, path: Path, split: str) -> tuple:
    with np.load(path) as arrays:
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"].reshape(-1)
    with torch.no_grad():
        model.eval()
        logits = model_logits(model, to_model_tensor(images, 8, 1))
    return torch.softmax(logits, dim=1).numpy(), labels


def test_auto_scores_only_pools_with_official_val_and_test(tmp_path: Path) -> None:
    full = _pool(tmp_path / "full.npz", 2)
    train_only = _pool(tmp_path / "train.npz", 2, ("train",))
    assert server_split_enabled(_config(full))
    assert not server_split_enabled(_config(train_only))
    assert not server_split_enabled(_config(full, **{"eval.server-split": "off"}))
    assert not server_split_enabled(_config(full, **{"partition.split": "val"}))
    assert not server_split_enabled(MedfedConfig())  # no pool: synthetic hospitals


def test_official_is_refused_when_it_cannot_be_honoured(tmp_path: Path) -> None:
    train_only = _pool(tmp_path / "train.npz", 2, ("train",))
    with pytest.raises(ConfigError, match=r"eval.server-split.*val_images"):
        server_split_enabled(_config(train_only, **{"eval.server-split": "official"}))
    with pytest.raises(ConfigError, match=r"eval.server-split.*partition.pool"):
        MedfedConfig.from_flat({"eval.server-split": "official"})
    with pytest.raises(ConfigError, match=r"eval.server-split.*'test' split"):
        _config(train_only, **{"eval.server-split": "official", "partition.split": "test"})
    with pytest.raises(ConfigError, match=r"eval.server-split"):
        MedfedConfig.from_flat({"eval.server-split": "sometimes"})


def test_binary_threshold_is_chosen_on_val_and_test_is_scored_at_it(tmp_path: Path) -> None:
    # Prepare
    path = _pool(tmp_path / "pool.npz", 2)
    config = _config(path)
    torch.manual_seed(3)
    model = build_model(config.model, 1)
    val_scores, val_labels = _scores(config, model, path, "val")
    test_scores, test_labels = _scores(config, model, path, "test")
    # Execute
    figures = PublicEvaluator(config)(model_to_arrays(model))
    # Assert: Youden's J on val over the 1/100 grid (ties: nearest 0.5), by brute force
    grid = np.arange(101) / 100
    called = val_scores[:, 1][None, :] >= grid[:, None]
    sens = (called & (val_labels == 1)).sum(1) / (val_labels == 1).sum()
    spec = (~called & (val_labels == 0)).sum(1) / (val_labels == 0).sum()
    youden = sens + spec - 1
    best = np.flatnonzero(np.isclose(youden, youden.max(), atol=1e-12))
    expected_threshold = grid[best[np.argmin(np.abs(best - 50))]]
    assert figures["threshold"] == pytest.approx(expected_threshold)
    predicted = (test_scores[:, 1] >= expected_threshold).astype(int)
    assert figures["balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(test_labels, predicted)
    )
    assert figures["auc"] == pytest.approx(roc_auc_score(test_labels, test_scores[:, 1]))
    assert figures["val_auc"] == pytest.approx(roc_auc_score(val_labels, val_scores[:, 1]))
    assert (figures["n_val"], figures["n_test"]) == (60, 80)


def test_multiclass_reports_macro_auc_and_arg_max_balanced_accuracy(tmp_path: Path) -> None:
    path = _pool(tmp_path / "pool.npz", 3)
    config = _config(path, 3)
    torch.manual_seed(4)
    model = build_model(config.model, 1)
    test_scores, test_labels = _scores(config, model, path, "test")
    figures = PublicEvaluator(config)(model_to_arrays(model))
    assert figures["threshold"] is None
    assert figures["auc"] == pytest.approx(
        roc_auc_score(test_labels, test_scores, multi_class="ovr", average="macro")
    )
    assert figures["balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(test_labels, test_scores.argmax(1))
    )


def test_round_record_line_and_best_round_carry_the_official_figures() -> None:
    recorded = []
    calls: list[ArrayRecord] = []

    def stub(arrays: ArrayRecord) -> dict[str, object]:
        calls.append(arrays)
        return {"val_auc": 0.9, "auc": 0.95, "balanced_accuracy": 0.88}

    recorder = RoundRecorder(listener=lambda r, a: recorded.append(r), public_eval=stub)
    arrays = ArrayRecord([np.zeros(2, dtype=np.float32)])
    assert recorder.end_round(0, arrays) is None and not calls  # before round 1: nothing
    recorder.end_round(1, arrays)
    assert calls == [arrays]
    assert recorded[0].official["auc"] == 0.95
    assert recorded[0].to_json()["official"]["balanced_accuracy"] == 0.88
    assert "official test auc 0.950 bacc 0.880" in round_line(recorded[0], 3)
    history = [
        {"round": 1, "official": {"val_auc": 0.7, "auc": 0.8}},
        {"round": 2, "official": {"val_auc": 0.9, "auc": 0.7}},
        {"round": 3, "official": {"val_auc": 0.9, "auc": 0.99}},
    ]
    assert best_by_val(history) == (2, history[1]["official"])  # earliest of the ties
    assert best_by_val([{"round": 1}]) is None


def test_report_shows_the_official_test_line_only_when_there_is_one() -> None:
    from server.report_data import OFFICIAL_LABEL, metric_series

    rounds = [
        {"round": 1, "auc": 0.7, "official": {"auc": 0.65}},
        {"round": 2, "auc": 0.8, "official": {"auc": 0.75}},
    ]
    series = metric_series(rounds, "auc")
    assert [s.label for s in series] == ["pooled", OFFICIAL_LABEL]
    assert series[1].values == [0.65, 0.75]
    assert [s.label for s in metric_series(rounds, "f1")] == ["pooled"]
    assert [s.label for s in metric_series([{"round": 1, "auc": 0.7}], "auc")] == ["pooled"]
