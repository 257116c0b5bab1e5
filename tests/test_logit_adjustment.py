"""Logit adjustment without DP (train.logit-adjustment): the site's label mix stays out of
the model; refused under DP-SGD, naming the key."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from client.logit_adjustment import LogitAdjustedLoss
from client.train import plan_round, prepare_training, train_locally
from common.config import MedfedConfig
from common.data.preprocess import model_logits
from common.errors import ConfigError


def _skewed_site(n: int = 400, share_of_class_0: float = 0.9) -> TensorDataset:
    """Identical images (nothing to tell the labels apart); 90 % of the labels are class 0."""
    generator = torch.Generator().manual_seed(0)
    images = torch.full((n, 1, 8, 8), 0.5)
    labels = (torch.rand(n, generator=generator) >= share_of_class_0).long()
    return TensorDataset(images, labels)


def _probability_of_class_0(strength: float) -> float:
    config = MedfedConfig().replace(
        **{
            "privacy.enabled": False,
            "train.batch-size": 50,
            "train.local-epochs": 30,
            "train.learning-rate": 0.5,
            "train.logit-adjustment": strength,
        }
    )
    site = _skewed_site()
    plan = plan_round(len(site), config.train, config.privacy, planned_rounds=1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    train_locally(model, site, config.train, config.privacy, plan=plan)
    with torch.no_grad():
        return float(model_logits(model, site.tensors[0][:1]).softmax(dim=1)[0, 0])


def test_the_sites_label_mix_does_not_become_the_models_bias() -> None:
    # plain cross-entropy learns the site's prior (90 % class 0) when the images carry no
    # signal; with the adjustment the loss holds the prior, and the model stays at even odds
    assert _probability_of_class_0(0.0) > 0.85
    assert abs(_probability_of_class_0(1.0) - 0.5) < 0.05


def test_the_loss_shifts_the_logits_by_the_log_of_the_smoothed_counts() -> None:
    labels = torch.tensor([0, 0, 0, 1])  # three classes; class 2 absent at this site
    loss = LogitAdjustedLoss(labels, strength=0.5)
    logits = torch.randn(4, 3, generator=torch.Generator().manual_seed(2))
    targets = torch.tensor([0, 1, 2, 0])

    prior = torch.tensor([4.0, 2.0, 1.0]) / 7  # counts + 1
    expected = nn.functional.cross_entropy(logits + 0.5 * prior.log(), targets)

    assert torch.allclose(loss(logits, targets), expected)
    assert torch.isfinite(loss(logits, targets))
    with pytest.raises(ValueError, match="strength must be positive"):
        LogitAdjustedLoss(labels, strength=0.0)


def test_logit_adjustment_is_refused_under_dp_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"'train.logit-adjustment' = 1.0: adds the site's"):
        MedfedConfig().replace(**{"train.logit-adjustment": 1.0})
    with pytest.raises(ConfigError, match=r"'train.logit-adjustment' = -1.0: must be"):
        MedfedConfig().replace(**{"privacy.enabled": False, "train.logit-adjustment": -1.0})
    # below the config, preparing DP training refuses it too
    config = MedfedConfig().replace(
        **{"privacy.accountant": "rdp", "privacy.noise-multiplier": 1.0}
    )
    train = dataclasses.replace(config.train, logit_adjustment=1.0)
    site = _skewed_site(40)
    plan = plan_round(len(site), train, config.privacy, planned_rounds=1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    with pytest.raises(ValueError, match="logit adjustment is not possible under DP-SGD"):
        prepare_training(model, site, train, config.privacy, plan=plan)
