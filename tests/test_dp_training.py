"""DP-SGD round planning and Opacus options: sample rate, steps, noise, ghost, memory."""

from __future__ import annotations

import copy

import pytest
import torch
from opacus.grad_sample import wrap_model
from torch.utils.data import TensorDataset

from client.train import grad_sample_mode_for, plan_round, prepare_training, train_locally
from common.config import BATCHNORM_MODELS, MODEL_NAMES, MedfedConfig, ModelConfig
from common.errors import ConfigError
from common.models import build_model
from common.privacy import epsilon_of


def _dataset(n: int, seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    return TensorDataset(
        torch.randn(n, 1, 16, 16, generator=generator),
        torch.randint(0, 2, (n,), generator=generator),
    )


@pytest.fixture
def fedsgd() -> MedfedConfig:
    """The STACK-NOTES federated DP recipe: q = 0.5 at every site, one step per round."""
    return MedfedConfig().replace(
        **{
            "train.batches-per-epoch": 2,
            "train.local-steps": 1,
            "train.momentum": 0.0,
            "privacy.accountant": "rdp",
        }
    )


@pytest.mark.parametrize("num_examples", [41, 100, 1509])
def test_batches_per_epoch_gives_every_site_the_same_sample_rate(
    fedsgd: MedfedConfig, num_examples: int
) -> None:
    config = fedsgd.replace(**{"privacy.noise-multiplier": 1.0})  # no calibration needed

    plan = plan_round(num_examples, config.train, config.privacy, planned_rounds=120)

    assert plan.sample_rate == 0.5
    assert plan.steps == 1
    assert plan.batch_size == -(-num_examples // 2)


def test_noise_from_target_spends_at_most_the_target_over_the_plan(fedsgd: MedfedConfig) -> None:
    plan = plan_round(200, fedsgd.train, fedsgd.privacy, planned_rounds=120)

    spent = epsilon_of(
        [(plan.noise_multiplier, plan.sample_rate, 120 * plan.steps)],
        delta=fedsgd.privacy.delta,
        accountant="rdp",
    )

    # STACK-NOTES: sigma = 3.608 for eps 8, delta 1e-5, q 0.5, 120 steps (RDP).
    assert plan.noise_multiplier == pytest.approx(3.608, abs=0.01)
    assert fedsgd.privacy.target_epsilon - 0.05 < spent <= fedsgd.privacy.target_epsilon


def test_explicit_noise_multiplier_is_used_as_given(fedsgd: MedfedConfig) -> None:
    config = fedsgd.replace(**{"privacy.noise-multiplier": 2.5})
    plan = plan_round(40, config.train, config.privacy, planned_rounds=3)

    prepared = prepare_training(
        build_model(config.model, 1), _dataset(40), config.train, config.privacy, plan=plan
    )

    assert plan.noise_multiplier == 2.5
    assert prepared.optimizer.noise_multiplier == 2.5  # type: ignore[attr-defined]


def test_local_steps_and_physical_batch_split_count_logical_steps(
    small_config: MedfedConfig,
) -> None:
    config = small_config.replace(
        **{
            "train.local-steps": 3,
            "train.batch-size": 30,
            "train.max-physical-batch": 7,
            "privacy.accountant": "rdp",
        }
    )
    plan = plan_round(60, config.train, config.privacy, planned_rounds=2)

    result = train_locally(
        build_model(config.model, 1), _dataset(60), config.train, config.privacy, plan=plan
    )

    assert result.history == [(plan.noise_multiplier, 0.5, 3)]
    assert result.epsilon == pytest.approx(
        epsilon_of(result.history, delta=config.privacy.delta, accountant="rdp")
    )


@pytest.mark.parametrize("mode", ["auto", "hooks", "ghost", "ew", "functorch"])
def test_grad_sample_modes_train_and_account_the_same_steps(
    small_config: MedfedConfig, mode: str
) -> None:
    config = small_config.replace(
        **{"privacy.grad-sample-mode": mode, "privacy.noise-multiplier": 1.0}
    )
    model = build_model(config.model, 1)
    before = [p.detach().clone() for p in model.parameters()]
    plan = plan_round(40, config.train, config.privacy, planned_rounds=2)

    result = train_locally(model, _dataset(40), config.train, config.privacy, plan=plan)

    assert result.history == [(plan.noise_multiplier, plan.sample_rate, plan.steps)]
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    # the model leaves as it came: Opacus' hooks and per-sample gradients are gone
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())


@pytest.mark.parametrize("mode", ["hooks", "ghost", "ew", "functorch"])
def test_an_empty_poisson_batch_takes_a_noise_only_step_in_every_per_sample_mode(
    small_config: MedfedConfig, mode: str
) -> None:
    # batch 1 of 10 images: q = 0.1, so about a third of the 30 steps draw no image at all.
    # ew and functorch failed on a batch of 0 images; DP-SGD still owes that step its noise.
    config = small_config.replace(
        **{
            "privacy.grad-sample-mode": mode,
            "privacy.noise-multiplier": 1.0,
            "train.batch-size": 1,
            "train.local-steps": 30,
        }
    )
    plan = plan_round(10, config.train, config.privacy, planned_rounds=1)
    torch.manual_seed(0)
    model = build_model(config.model, 1)
    before = [p.detach().clone() for p in model.parameters()]

    result = train_locally(model, _dataset(10), config.train, config.privacy, plan=plan)

    assert plan.steps == 30
    assert result.history == [(1.0, 0.1, 30)]
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def _model_inputs(name: str, count: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(2)
    if name.startswith("seq-"):  # ordered stacks (N, C, D, H, W)
        return (torch.rand(count, 1, 3, 16, 16, generator=generator),)
    images = torch.rand(count, 1, 16, 16, generator=generator)
    if name == "fusion-cnn":  # images and two clinical variables
        return images, torch.rand(count, 2, generator=generator)
    return (images,)


# the models auto leaves to hooks: a trainable layer outside client.train.EW_LAYERS (weight-
# standardized convolutions; Opacus' DP RNNs, whose ew gradients are right but unmeasured for speed)
HOOKS_UNDER_AUTO = {"small-cnn-ws", "cnn-medium-ws", "seq-gru", "seq-lstm"}


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
@pytest.mark.parametrize("name", sorted(set(MODEL_NAMES) - set(BATCHNORM_MODELS)))
def test_auto_takes_expanded_weights_only_where_they_give_each_image_its_own_gradient(
    name: str,
) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name), 1, tabular_features=2 * (name == "fusion-cnn"))
    inputs, labels = _model_inputs(name, 3), torch.tensor([0, 1, 1])

    mode = grad_sample_mode_for(model, "auto")

    assert mode == ("hooks" if name in HOOKS_UNDER_AUTO else "ew")
    assert grad_sample_mode_for(model, "ghost") == "ghost"  # a mode named is a mode taken
    expected = []
    for i in range(3):  # one image at a time: its true gradient
        model.zero_grad()
        one = [x[i : i + 1] for x in inputs]
        torch.nn.functional.cross_entropy(model(*one), labels[i : i + 1]).backward()
        expected.append({n: p.grad.clone() for n, p in model.named_parameters()})
    wrapped_model = copy.deepcopy(model)
    wrapped = wrap_model(wrapped_model, grad_sample_mode=mode, loss_reduction="sum")
    torch.nn.functional.cross_entropy(wrapped(*inputs), labels, reduction="sum").backward()
    for param_name, param in wrapped_model.named_parameters():
        for i in range(3):
            torch.testing.assert_close(
                param.grad_sample[i], expected[i][param_name], atol=1e-5, rtol=1e-4
            )


def test_bad_grad_sample_mode_and_missing_secure_rng_are_config_errors(
    small_config: MedfedConfig,
) -> None:
    config = small_config.replace(**{"privacy.noise-multiplier": 1.0})
    plan = plan_round(40, config.train, config.privacy, planned_rounds=2)
    with pytest.raises(
        ConfigError, match=r"'privacy\.grad-sample-mode' = 'magic': expected one of"
    ):
        small_config.replace(**{"privacy.grad-sample-mode": "magic"})
    config = small_config.replace(**{"privacy.noise-multiplier": 1.0, "privacy.secure-mode": True})
    with pytest.raises(ConfigError, match="secure-mode needs the torchcsprng package"):
        prepare_training(
            build_model(config.model, 1), _dataset(40), config.train, config.privacy, plan=plan
        )


def test_unreachable_target_is_a_config_error(small_config: MedfedConfig) -> None:
    config = small_config.replace(**{"privacy.target-epsilon": 1e-6})

    with pytest.raises(ConfigError, match="cannot reach epsilon"):
        plan_round(40, config.train, config.privacy, planned_rounds=2)
