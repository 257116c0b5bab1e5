"""Model registry: every model but the BatchNorm ones is DP-compatible; all handle gray/RGB,
binary/multi-class."""

from __future__ import annotations

import pytest
import torch
from opacus.validators import ModuleValidator

from common.config import (
    BATCHNORM_MODELS,
    MODEL_NAMES,
    SEQUENCE_MODELS,
    MedfedConfig,
    ModelConfig,
)
from common.errors import ConfigError
from common.models import FUSION_REGISTRY, MODEL_REGISTRY, build_model
from common.params import arrays_to_model, model_to_arrays


@pytest.mark.parametrize("name", sorted(set(MODEL_REGISTRY) - set(BATCHNORM_MODELS)))
def test_every_registered_model_passes_opacus_validation(name: str) -> None:
    model = build_model(ModelConfig(name=name, num_classes=2), in_channels=1)

    errors = ModuleValidator.validate(model, strict=False)

    assert errors == []
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


@pytest.mark.parametrize("name", sorted(MODEL_REGISTRY))
@pytest.mark.parametrize(("channels", "classes"), [(1, 2), (3, 5)])
def test_models_map_28px_images_to_one_logit_per_class(
    name: str, channels: int, classes: int
) -> None:
    model = build_model(ModelConfig(name=name, num_classes=classes), in_channels=channels)
    stacks = name in SEQUENCE_MODELS  # (N, C, D, H, W): 4 ordered frames each

    logits = model(
        torch.randn(3, channels, 4, 28, 28) if stacks else torch.randn(3, channels, 28, 28)
    )

    assert logits.shape == (3, classes)
    assert torch.isfinite(logits).all()


def test_model_sizes_are_what_the_docs_say() -> None:
    def size(name: str) -> int:
        model = build_model(ModelConfig(name=name), in_channels=1)
        return sum(p.numel() for p in model.parameters())

    assert 20_000 < size("small-cnn") < 25_000
    assert 80_000 < size("cnn-medium") < 100_000
    assert size("cnn-medium-bn") == size("cnn-medium")  # the same weights, another norm
    assert size("cnn-medium-ws") == size("cnn-medium")  # the same weights, standardized
    assert 11_000_000 < size("resnet18-gn") < 11_500_000
    assert 30_000 < size("seq-gru") < 35_000
    assert 35_000 < size("seq-lstm") < 38_000


def test_registry_implements_exactly_the_names_the_config_allows() -> None:
    assert sorted([*MODEL_REGISTRY, *FUSION_REGISTRY]) == sorted(MODEL_NAMES)


@pytest.mark.parametrize("name", sorted(FUSION_REGISTRY))
def test_fusion_models_take_images_and_tabular_features(name: str) -> None:
    model = build_model(ModelConfig(name=name, num_classes=3), in_channels=1, tabular_features=7)

    logits = model(torch.rand(4, 1, 28, 28), torch.randn(4, 7))

    assert logits.shape == (4, 3)
    assert ModuleValidator.validate(model, strict=False) == []
    with pytest.raises(ValueError, match="at least one tabular feature"):
        build_model(ModelConfig(name=name, num_classes=2), in_channels=1)


def test_unknown_model_and_bad_class_count_are_refused_by_the_config() -> None:
    with pytest.raises(ConfigError, match=r"'model.name' = 'vgg': expected one of small-cnn"):
        ModelConfig(name="vgg")
    with pytest.raises(ConfigError, match=r"'model.num-classes' = 1: must be in \[2, 16\]"):
        ModelConfig(num_classes=1)


def test_weight_standardized_convolutions_use_unit_variance_filters() -> None:
    model = build_model(ModelConfig(name="small-cnn-ws"), in_channels=1)
    conv = model.features[0]
    with torch.no_grad():
        conv.weight.mul_(7.0).add_(3.0)  # scaling and shifting the raw filters changes nothing
    x = torch.randn(2, 1, 28, 28)

    scaled = conv(x)
    with torch.no_grad():
        conv.weight.sub_(3.0).div_(7.0)

    assert torch.allclose(scaled, conv(x), rtol=1e-3, atol=1e-3)


def test_opacus_per_sample_gradients_of_the_standardized_model_are_exact() -> None:
    # common.ws_conv registers a grad sampler for WSConv2d (Opacus' hooks path, not its
    # functorch fallback); its per-sample gradients must equal one backward pass per example,
    # through the standardization, for filters far from standardized ones.
    from opacus import GradSampleModule

    from common.ws_conv import WSConv2d

    torch.manual_seed(0)
    model = build_model(ModelConfig(name="small-cnn-ws"), in_channels=1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, WSConv2d):
                module.weight.mul_(5.0).add_(0.3)
    assert WSConv2d in GradSampleModule.GRAD_SAMPLERS
    _assert_opacus_per_sample_gradients_exact(model, torch.randn(4, 1, 28, 28))


def test_scatter_cnn_sends_only_its_trainable_weights() -> None:
    # The scattering filters are derived from the image size, not learned: they must never
    # enter the state dict that travels to the server and into checkpoints.
    model = build_model(ModelConfig(name="scatter-cnn", num_classes=5), in_channels=3)

    logits_28 = model(torch.rand(2, 3, 28, 28))
    logits_64 = model(torch.rand(2, 3, 64, 64))  # filters built per input shape

    assert logits_28.shape == logits_64.shape == (2, 5)
    state = model.state_dict()
    assert sum(v.numel() for v in state.values()) == sum(p.numel() for p in model.parameters())
    assert all(not key.startswith("scatter") for key in state)


def test_opacus_per_sample_gradients_of_the_scatter_cnn_are_exact() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="scatter-cnn"), in_channels=1)

    _assert_opacus_per_sample_gradients_exact(model, torch.randn(3, 1, 28, 28))


def test_scatter_linear_has_a_weight_count_independent_of_the_image_size() -> None:
    model = build_model(ModelConfig(name="scatter-linear"), in_channels=1)

    logits_28 = model(torch.rand(2, 1, 28, 28))
    logits_64 = model(torch.rand(2, 1, 64, 64))

    assert logits_28.shape == logits_64.shape == (2, 2)
    # 81 coefficient maps of 7 x 7 per grayscale image, one weight each per class, plus biases
    assert sum(p.numel() for p in model.parameters()) == 81 * 49 * 2 + 2
    assert all(not key.startswith("scatter") for key in model.state_dict())


def test_opacus_per_sample_gradients_of_the_scatter_linear_model_are_exact() -> None:
    from client.train import grad_sample_mode_for

    torch.manual_seed(0)
    model = build_model(ModelConfig(name="scatter-linear", num_classes=5), in_channels=3)

    assert grad_sample_mode_for(model, "auto") == "ew"
    _assert_opacus_per_sample_gradients_exact(model, torch.randn(3, 3, 28, 28))


def _assert_opacus_per_sample_gradients_exact(model: torch.nn.Module, x: torch.Tensor) -> None:
    """Opacus' per-sample gradients (hooks) equal one backward pass per example."""
    from opacus import GradSampleModule

    y = torch.arange(len(x)) % 2
    loss_fn = torch.nn.CrossEntropyLoss(reduction="sum")
    expected = []
    for i in range(len(x)):
        model.zero_grad()
        loss_fn(model(x[i : i + 1]), y[i : i + 1]).backward()
        expected.append([p.grad.clone() for p in model.parameters()])

    wrapped = GradSampleModule(model, loss_reduction="sum")
    wrapped.zero_grad()
    loss_fn(wrapped(x), y).backward()

    for index, param in enumerate(model.parameters()):
        per_sample = torch.stack([grads[index] for grads in expected])
        assert torch.allclose(param.grad_sample, per_sample, atol=1e-5)


def test_scatter_features_are_remembered_per_image_and_recomputed_when_pixels_change() -> None:
    from common.scatter_cnn import ScatterFeatures

    features = ScatterFeatures()
    x = torch.rand(6, 1, 28, 28)
    first = features(x)
    changed = x.clone()
    changed[2] += 0.5  # a new image (an augmented view, say): its coefficients are new

    again, other = features(x), features(changed)

    assert torch.equal(first, again)
    assert torch.equal(other[[0, 1, 3, 4, 5]], first[[0, 1, 3, 4, 5]])
    assert not torch.allclose(other[2], first[2])
    # what the memo served is kymatio's transform of those very pixels
    from kymatio.scattering2d.frontend.torch_frontend import ScatteringTorch2D

    direct = ScatteringTorch2D(J=2, shape=(28, 28), L=8)(changed).reshape(6, 81, 7, 7)
    assert torch.allclose(first[[0, 1, 3, 4, 5]], direct[[0, 1, 3, 4, 5]], atol=1e-6)
    assert torch.allclose(other, direct, atol=1e-6)


@pytest.mark.parametrize("name", BATCHNORM_MODELS)
def test_batchnorm_models_fail_opacus_validation_and_dp_runs_refuse_them(name: str) -> None:
    model = build_model(ModelConfig(name=name), in_channels=1)
    assert ModuleValidator.validate(model, strict=False)  # Opacus would refuse it too

    private = {"model.name": name, "privacy.enabled": True}
    with pytest.raises(ConfigError, match=rf"'model.name' = '{name}': uses BatchNorm"):
        MedfedConfig.from_flat(private)
    assert MedfedConfig.from_flat({**private, "privacy.enabled": False}).model.name == name


def test_batchnorm_running_statistics_travel_and_average_with_the_weights() -> None:
    """FedAvg of two sites' replies (Flower's own weighted mean) gives the global model the
    mean of their running statistics; evaluation then uses them, not the batch's."""
    from flwr.app import MetricRecord, RecordDict
    from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

    torch.manual_seed(0)
    replies = []
    for shift in (0.0, 4.0):  # two sites whose images differ in brightness
        site = build_model(ModelConfig(name="cnn-medium-bn"), in_channels=1).train()
        site(torch.rand(16, 1, 28, 28) + shift)  # one training-mode pass updates the stats
        replies.append(
            RecordDict({"arrays": model_to_arrays(site), "metrics": MetricRecord({"n": 10})})
        )
    stats = [r["arrays"]["features.1.running_mean"].numpy() for r in replies]
    assert not (stats[0] == stats[1]).all()

    merged = build_model(ModelConfig(name="cnn-medium-bn"), in_channels=1)
    arrays_to_model(aggregate_arrayrecords(replies, "n"), merged)

    norm = merged.features[1]
    torch.testing.assert_close(norm.running_mean.numpy(), (stats[0] + stats[1]) / 2)
    assert int(norm.num_batches_tracked) == 1
    merged.eval()
    one = torch.rand(1, 1, 28, 28)
    torch.testing.assert_close(merged(one)[0], merged(torch.cat([one, one + 9]))[0])
