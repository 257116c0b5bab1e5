"""Model registry: DP-compatible networks (GroupNorm, never BatchNorm) picked by name."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from common.config import ModelConfig
from common.errors import ConfigError


def _conv_block(in_ch: int, out_ch: int, groups: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1),
        nn.GroupNorm(groups, out_ch),
        nn.ReLU(),
    ]


class SmallCNN(nn.Module):
    """Three conv blocks (16-32-64 channels, GroupNorm) + global average pool + linear.

    About 24k parameters: small enough that DP noise stays tolerable and a round takes
    seconds on one CPU core.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_block(in_channels, width, 4),
            nn.MaxPool2d(2),
            *_conv_block(width, 2 * width, 8),
            nn.MaxPool2d(2),
            *_conv_block(2 * width, 4 * width, 8),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


ModelBuilder = Callable[[int, int], nn.Module]

MODEL_REGISTRY: dict[str, ModelBuilder] = {
    "small-cnn": lambda in_ch, n_cls: SmallCNN(in_ch, n_cls),
}


def build_model(config: ModelConfig, in_channels: int) -> nn.Module:
    """Instantiate the registered model named in ``config``."""
    try:
        builder = MODEL_REGISTRY[config.name]
    except KeyError:
        known = ", ".join(sorted(MODEL_REGISTRY))
        raise ConfigError(f"unknown model '{config.name}' (known: {known})") from None
    return builder(in_channels, config.num_classes)
