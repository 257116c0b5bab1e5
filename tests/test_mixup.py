"""Mixup without DP (train.mixup): blended batches and losses; refused under DP-SGD."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from client.mixup import mix_batch
from client.train import plan_round, prepare_training, run_steps, train_locally
from common.config import MedfedConfig
from common.errors import ConfigError
from common.models import build_model


def test_each_example_is_blended_with_one_partner_by_one_weight() -> None:
    torch.manual_seed(0)
    # image i is the constant i: a blended pixel tells which two images made it
    images = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 1, 4, 4)
    clinical = torch.arange(6, dtype=torch.float32).view(6, 1) * 10
    labels = torch.tensor([0, 1, 0, 1, 1, 0])

    mixed = mix_batch([images, clinical], labels, alpha=0.4)

    weight = mixed.weight
    assert 0 <= weight <= 1
    partners = []
    for i in range(6):
        pixel = float(mixed.inputs[0][i, 0, 0, 0])
        partner = round((pixel - weight * i) / (1 - weight)) if weight < 1 else i
        partners.append(partner)
        assert torch.allclose(
            mixed.inputs[0][i], weight * images[i] + (1 - weight) * images[partner]
        )
        assert torch.allclose(
            mixed.inputs[1][i], weight * clinical[i] + (1 - weight) * clinical[partner]
        )
        assert int(mixed.partner_labels[i]) == int(labels[partner])
    assert sorted(partners) == list(range(6))  # a permutation of the batch
    assert torch.equal(mixed.labels, labels)


def test_the_loss_is_blended_by_the_same_weight() -> None:
    torch.manual_seed(1)
    labels = torch.tensor([0, 1, 1, 0])
    mixed = mix_batch([torch.rand(4, 3)], labels, alpha=1.0)
    logits = torch.randn(4, 2)
    criterion = nn.CrossEntropyLoss()

    expected = mixed.weight * criterion(logits, labels) + (1 - mixed.weight) * criterion(
        logits, mixed.partner_labels
    )

    assert torch.allclose(mixed.loss(criterion, logits), expected)
    with pytest.raises(ValueError, match="alpha must be positive"):
        mix_batch([torch.rand(4, 3)], labels, alpha=0.0)


def _dataset(n: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    return TensorDataset(
        torch.rand(n, 1, 28, 28, generator=generator),
        torch.randint(0, 2, (n,), generator=generator),
    )


def _trained(config: MedfedConfig) -> torch.Tensor:
    plan = plan_round(40, config.train, config.privacy, planned_rounds=1)
    torch.manual_seed(3)
    model = build_model(config.model, 1)
    train_locally(model, _dataset(40), config.train, config.privacy, plan=plan)
    return torch.nn.utils.parameters_to_vector(model.parameters()).detach()


def test_mixup_changes_the_update_and_a_seeded_round_repeats_it() -> None:
    plain = MedfedConfig().replace(**{"privacy.enabled": False, "train.batch-size": 8})
    mixup = plain.replace(**{"train.mixup": 0.4, "train.augment-views": 1})

    assert torch.equal(_trained(mixup), _trained(mixup))
    assert not torch.equal(_trained(mixup), _trained(mixup.replace(**{"train.mixup": 0.0})))


def test_mixup_is_refused_under_dp_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"'train.mixup' = 0.2: blends two patients"):
        MedfedConfig().replace(**{"train.mixup": 0.2})
    with pytest.raises(ConfigError, match=r"'train.mixup' = -1.0: must be"):
        MedfedConfig().replace(**{"privacy.enabled": False, "train.mixup": -1.0})
    # below the config, the training loop refuses it too
    config = MedfedConfig().replace(
        **{"privacy.accountant": "rdp", "privacy.noise-multiplier": 1.0}
    )
    plan = plan_round(40, config.train, config.privacy, planned_rounds=1)
    model = build_model(config.model, 1)
    prepared = prepare_training(model, _dataset(40), config.train, config.privacy, plan=plan)
    with pytest.raises(ValueError, match="mixup is not possible under DP-SGD"):
        run_steps(prepared, 1, mixup=0.2)
