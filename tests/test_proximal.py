"""FedProx's proximal term reaches the update, with and without DP-SGD (Opacus)."""

from __future__ import annotations

import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from client.proximal import ProximalTerm
from client.train import plan_round, train_locally
from common.config import PrivacyConfig, TrainConfig


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 2))


def _data() -> TensorDataset:
    generator = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(32, 1, 2, 4, generator=generator), torch.arange(32) % 2)


def test_penalty_is_half_mu_squared_distance_and_its_gradient_is_mu_times_offset() -> None:
    model = _model()
    term = ProximalTerm(model, mu=0.5)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(1.0)
    count = sum(p.numel() for p in model.parameters())
    assert torch.isclose(term.penalty(), torch.tensor(0.25 * count))
    term.penalty().backward()
    assert all(torch.allclose(p.grad, torch.full_like(p, 0.5)) for p in model.parameters())


def _dp_step(mu: float) -> list[torch.Tensor]:
    """One noiseless DP-SGD step from weights moved 1.0 away from the proximal anchor."""
    model = _model()
    term = ProximalTerm(model, mu)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(1.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    engine = PrivacyEngine(accountant="rdp")
    dp_model, dp_optimizer, loader = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=DataLoader(_data(), batch_size=32),
        noise_multiplier=0.0,
        max_grad_norm=100.0,
        poisson_sampling=False,
    )
    term.attach(dp_optimizer)
    images, labels = next(iter(loader))
    nn.CrossEntropyLoss()(dp_model(images), labels).backward()
    dp_optimizer.step()
    assert len(engine.accountant.history) == 1  # Opacus' accounting hook still ran
    return [p.detach().clone() for p in model.parameters()]


def test_under_dp_the_proximal_gradient_is_added_after_clipping_and_noise() -> None:
    without, with_prox = _dp_step(0.0), _dp_step(0.3)
    for a, b in zip(without, with_prox, strict=True):
        torch.testing.assert_close(a - b, torch.full_like(a, 0.3))  # lr * mu * (w - anchor)


def test_large_mu_keeps_the_local_model_near_the_global_one() -> None:
    distances = {}
    for dp in (False, True):
        for mu in (0.0, 5.0):
            model = _model()
            start = [p.detach().clone() for p in model.parameters()]
            torch.manual_seed(2)
            train = TrainConfig(local_epochs=3, batch_size=8, learning_rate=0.1, momentum=0.0)
            privacy = PrivacyConfig(enabled=dp, target_epsilon=8.0, accountant="rdp")
            data = _data()
            plan = plan_round(len(data), train, privacy, planned_rounds=1)
            train_locally(model, data, train, privacy, plan=plan, proximal_mu=mu)
            distances[dp, mu] = sum(
                float((p.detach() - s).norm() ** 2)
                for p, s in zip(model.parameters(), start, strict=True)
            )
    assert distances[False, 5.0] < 0.5 * distances[False, 0.0]
    assert distances[True, 5.0] < 0.5 * distances[True, 0.0]
