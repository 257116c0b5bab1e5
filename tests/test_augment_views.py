"""Augmented views per example (train.augment-views): shifts, and DP averaging before clipping;
the other per-step training settings (label smoothing, weight decay)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from opacus import GradSampleModule
from torch import nn
from torch.nn import functional
from torch.utils.data import TensorDataset

from client.augment_views import augmented_views, average_view_gradients
from client.train import plan_round, prepare_training, train_locally
from common.config import MedfedConfig
from common.errors import ConfigError
from common.models import build_model


def test_views_are_shifted_copies_of_their_own_image_next_to_each_other() -> None:
    torch.manual_seed(0)
    images = torch.rand(3, 1, 6, 6)
    views = augmented_views(images, views=4, shift=2, flip=False)
    assert views.shape == (12, 1, 6, 6)
    padded = functional.pad(images, (2, 2, 2, 2), mode="replicate")
    crops = {
        (i, dy, dx): padded[i, :, dy : dy + 6, dx : dx + 6]
        for i in range(3)
        for dy in range(5)
        for dx in range(5)
    }
    for row, view in enumerate(views):
        owner = row // 4
        assert any(torch.equal(view, crop) for (i, _, _), crop in crops.items() if i == owner)
    assert not all(torch.equal(views[0], views[k]) for k in range(1, 4))


def test_no_shift_and_no_flip_repeat_each_image() -> None:
    images = torch.rand(2, 3, 5, 5)
    assert torch.equal(augmented_views(images, 3, 0, False), images.repeat_interleave(3, 0))


def test_flip_mirrors_left_to_right_only() -> None:
    torch.manual_seed(1)
    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    views = augmented_views(image, views=16, shift=0, flip=True)
    mirrored = [torch.equal(v, image[0].flip(-1)) for v in views]
    kept = [torch.equal(v, image[0]) for v in views]
    assert all(m or k for m, k in zip(mirrored, kept, strict=True))
    assert any(mirrored) and any(kept)


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_under_dp_each_example_gets_the_mean_of_its_views_gradients() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 2))
    reference = copy.deepcopy(model)
    images, labels = torch.rand(3, 1, 8, 8), torch.tensor([0, 1, 1])
    views = augmented_views(images, views=2, shift=1, flip=True)
    wrapped = GradSampleModule(model)
    loss = functional.cross_entropy(wrapped(views), labels.repeat_interleave(2))
    loss.backward()
    average_view_gradients(wrapped, 2)
    for example in range(3):
        reference.zero_grad()
        own = views[2 * example : 2 * example + 2]
        functional.cross_entropy(reference(own), labels[example].repeat(2)).backward()
        for (name, param), ref in zip(
            model.named_parameters(), reference.parameters(), strict=True
        ):
            assert param.grad_sample.shape[0] == 3, name  # one gradient per example to clip
            torch.testing.assert_close(param.grad_sample[example], ref.grad, msg=name)


def _dataset(n: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    return TensorDataset(
        torch.rand(n, 1, 28, 28, generator=generator),
        torch.randint(0, 2, (n,), generator=generator),
    )


def test_views_cost_no_privacy_and_change_the_update() -> None:
    base = MedfedConfig().replace(
        **{
            "train.batches-per-epoch": 2,
            "train.local-steps": 1,
            "privacy.accountant": "rdp",
            "privacy.noise-multiplier": 1.0,
        }
    )
    results = {}
    for views in (0, 4):
        config = base.replace(**{"train.augment-views": views})
        plan = plan_round(60, config.train, config.privacy, planned_rounds=10)
        torch.manual_seed(3)
        model = build_model(config.model, 1)
        result = train_locally(model, _dataset(60), config.train, config.privacy, plan=plan)
        results[views] = (result, torch.nn.utils.parameters_to_vector(model.parameters()))
    assert results[4][0].history == results[0][0].history
    assert results[4][0].epsilon == results[0][0].epsilon
    assert not torch.equal(results[4][1], results[0][1])


def test_ghost_clipping_cannot_average_views() -> None:
    with pytest.raises(ConfigError, match=r"'train.augment-views' = 4: needs per-sample"):
        MedfedConfig().replace(**{"train.augment-views": 4, "privacy.grad-sample-mode": "ghost"})


def test_intensity_changes_each_views_brightness_and_contrast_within_range() -> None:
    torch.manual_seed(4)
    images = torch.rand(5, 1, 8, 8) * 0.5 + 0.25  # in [0.25, 0.75]: no clipping at 0.2
    views = augmented_views(images, views=6, shift=0, flip=False, intensity=0.2)
    originals = images.repeat_interleave(6, dim=0)
    assert views.shape == originals.shape
    assert float(views.min()) >= 0 and float(views.max()) <= 1
    # each view is an affine map of its own image: a * x + b, with a = brightness * contrast
    flat_view, flat_image = views.flatten(1), originals.flatten(1)
    centred_image = flat_image - flat_image.mean(1, keepdim=True)
    centred_view = flat_view - flat_view.mean(1, keepdim=True)
    scale = (centred_view * centred_image).sum(1) / (centred_image**2).sum(1)
    assert torch.allclose(centred_view, scale[:, None] * centred_image, atol=1e-5)
    assert float(scale.min()) >= 0.8**2 - 1e-5 and float(scale.max()) <= 1.2**2 + 1e-5
    brightness = flat_view.mean(1) / flat_image.mean(1)
    assert float(brightness.min()) >= 0.8 - 1e-5 and float(brightness.max()) <= 1.2 + 1e-5
    assert float(scale.std()) > 0.01 and float(brightness.std()) > 0.01  # drawn per view


def test_intensity_without_views_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"'train.augment-intensity' = 0.2: .*augment-views"):
        MedfedConfig().replace(**{"train.augment-intensity": 0.2})
    config = MedfedConfig().replace(**{"train.augment-intensity": 0.2, "train.augment-views": 1})
    assert config.train.augment_intensity == 0.2
    with pytest.raises(ConfigError, match=r"'train.augment-intensity' = 1.5: must be in"):
        MedfedConfig().replace(**{"train.augment-intensity": 1.5, "train.augment-views": 1})


def test_rotation_turns_each_view_about_its_centre_within_the_angle() -> None:
    torch.manual_seed(0)
    image = torch.zeros(1, 1, 21, 21)
    image[0, 0, 10, 10:] = 1.0  # a ray from the centre to the right edge
    views = augmented_views(image, views=64, shift=0, flip=False, rotate=30.0)
    assert views.shape == (64, 1, 21, 21)
    rows, cols = torch.meshgrid(torch.arange(21.0) - 10, torch.arange(21.0) - 10, indexing="ij")
    angles = []
    for view in views[:, 0]:
        weight = view * (rows**2 + cols**2 > 9)  # the ray away from the centre pixel
        # image rows grow downwards: a turn by +a moves the ray to row -sin(a)
        angle = torch.atan2(-(weight * rows).sum(), (weight * cols).sum())
        angles.append(math.degrees(float(angle)))
    assert max(abs(a) for a in angles) <= 31.0  # never past the limit (1 degree of pixels)
    assert max(angles) > 15 and min(angles) < -15  # both ways, well spread
    assert torch.allclose(views[:, 0, 10, 10], torch.ones(64), atol=1e-5)  # centre stays


def test_rotation_keeps_a_uniform_image_and_turns_all_frames_alike() -> None:
    torch.manual_seed(1)
    uniform = torch.full((2, 3, 9, 9), 0.4)
    assert torch.allclose(
        augmented_views(uniform, 3, 0, False, rotate=180.0), uniform[:1], atol=1e-6
    )
    volume = torch.rand(1, 1, 1, 9, 9).repeat(1, 1, 4, 1, 1)  # four identical frames
    turned = augmented_views(volume, views=2, shift=0, flip=False, rotate=90.0)
    assert turned.shape == (2, 1, 4, 9, 9)
    for view in turned:
        assert all(torch.equal(view[0, 0], view[0, k]) for k in range(1, 4))
    assert not torch.allclose(turned[0], volume[0])


def test_rotation_without_views_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"'train.augment-rotate' = 15.0: .*augment-views"):
        MedfedConfig().replace(**{"train.augment-rotate": 15.0})
    with pytest.raises(ConfigError, match=r"'train.augment-rotate' = 200.0: must be in"):
        MedfedConfig().replace(**{"train.augment-rotate": 200.0, "train.augment-views": 1})


def test_label_smoothing_aims_the_loss_below_certainty() -> None:
    config = MedfedConfig().replace(**{"privacy.enabled": False, "train.label-smoothing": 0.2})
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    plan = plan_round(4, config.train, config.privacy, planned_rounds=1)
    prepared = prepare_training(model, _dataset(4), config.train, config.privacy, plan=plan)
    certain = torch.tensor([[20.0, -20.0]])  # all mass on class 0, the true one
    hedged = torch.tensor([[math.log(9.0), 0.0]])  # 0.9 on class 0 = 1 - 0.2 + 0.2 / 2
    target = torch.tensor([0])
    assert prepared.criterion(hedged, target) < prepared.criterion(certain, target)
    with pytest.raises(ConfigError, match=r"'train.label-smoothing' = 1.0: must be in"):
        MedfedConfig().replace(**{"train.label-smoothing": 1.0})


@pytest.mark.parametrize("dp", [False, True])
def test_weight_decay_shrinks_the_weights_by_lr_times_decay_in_a_step(dp: bool) -> None:
    """One step from the same weights on the same batch: with decay w the weights end
    lr x w x (their start) lower than without it (momentum 0; under DP with zero noise)."""

    def one_step(weight_decay: float) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The linear layer's weights before the step, and how far the step moved them."""
        config = MedfedConfig().replace(
            **{
                "privacy.enabled": dp,
                "privacy.noise-multiplier": 1e-9 if dp else 0.0,
                "train.momentum": 0.0,
                "train.learning-rate": 0.5,
                "train.weight-decay": weight_decay,
                "train.batch-size": 4,
                "train.local-steps": 1,
            }
        )
        torch.manual_seed(0)
        layer = nn.Linear(28 * 28, 2)
        start = {k: v.detach().clone() for k, v in layer.state_dict().items()}
        plan = plan_round(4, config.train, config.privacy, planned_rounds=1)
        model = nn.Sequential(nn.Flatten(), layer)
        prepared = prepare_training(model, _dataset(4), config.train, config.privacy, plan=plan)
        images, labels = _dataset(4).tensors
        prepared.optimizer.zero_grad()
        prepared.criterion(prepared.model(images), labels).backward()
        prepared.optimizer.step()
        return start, {k: v.detach() - start[k] for k, v in layer.state_dict().items()}

    start, plain = one_step(0.0)
    _, decayed = one_step(0.1)
    for key in ("weight", "bias"):
        assert torch.allclose(decayed[key] - plain[key], -0.5 * 0.1 * start[key], atol=1e-5)
    with pytest.raises(ConfigError, match=r"'train.weight-decay' = -0.1: must be in"):
        MedfedConfig().replace(**{"train.weight-decay": -0.1})
