"""Model registry: networks picked by name; all DP-compatible (GroupNorm) but ``cnn-medium-bn``.

Every model takes ``(N, C, H, W)`` images (C = 1 grayscale or 3 RGB, any H, W >= 8 thanks to
global average pooling) and returns ``num_classes`` logits (2 for a binary task, trained
with cross-entropy; the positive-class score is the softmax of logit 1).

- ``small-cnn``: conv 16-32-64, ~24k parameters; the federated DP recipe in STACK-NOTES, and
  the best quality per CPU second on 28x28 MedMNIST (``benchmarks/medmnist_quality.py``:
  as good as ``cnn-medium`` at about 1/2 to 1/3 of its cost);
- ``small-cnn-ws``: ``small-cnn`` with weight-standardized convolutions (each output
  filter's weights are centred and scaled to unit variance before use, as in De et al. 2022,
  "Unlocking high-accuracy differentially private image classification through scale"): a
  DP lever of issue 19 (``common.ws_conv``: the convolution and the grad sampler that keeps
  Opacus' hooks path for it);
- ``cnn-medium``: conv 32-64-128, ~93k parameters; the mid-size choice for non-DP training
  or larger inputs (4x the parameters, 2-3x the CPU time of ``small-cnn``).
- ``cnn-medium-ws``: ``cnn-medium`` with weight-standardized convolutions (GroupNorm after
  each, as in BiT), the ``small-cnn-ws`` lever at the non-DP rows' size;
- ``cnn-medium-bn``: ``cnn-medium`` with BatchNorm instead of GroupNorm, for non-DP runs
  only (BatchNorm mixes the images of a batch, so there is no per-image gradient for DP-SGD
  to clip; the config refuses it with ``privacy.enabled``). Its running means and variances
  travel and are averaged with the weights. Centrally on BreastMNIST it lifts official val
  AUC from ~0.86 to ~0.95 against ``cnn-medium`` (issue 19, BENCHMARKS.md);
- ``scatter-cnn``: a CNN (32-64, ~42k parameters for grayscale) on fixed wavelet scattering
  features (kymatio's ScatterNet), as in Tramèr & Boneh 2021: a DP lever of issue 19
  (``common.scatter_cnn``);
- ``scatter-linear``: a linear classifier on the same features (pooled to 7x7; ~8k parameters
  for a grayscale binary task), the paper's ScatterNet+linear: fewer weights for the noise;
- ``resnet18-gn``: ResNet-18 as in the MedMNIST benchmark's 28x28 variant (3x3 stem,
  stride 1, no max-pool) with GroupNorm instead of BatchNorm; 11.2M parameters, slow on CPU.
- ``fusion-cnn``: image + clinical variables. The ``small-cnn`` trunk's 64-d image embedding
  is concatenated with a small MLP's embedding of the encoded clinical features
  (``common.data.clinical``; their count, identical at every site, comes from
  ``data.clinical-columns``), then a two-layer classifier. ``forward(images, tabular)``.

Sequence models (``SEQUENCE_MODELS``, for ``data.frames = "stack"``) take ``(N, C, D, H, W)``
ordered stacks instead: ``seq-gru`` / ``seq-lstm`` run ``small-cnn``'s encoder on every frame
and a GRU / LSTM over the frame embeddings (``common.sequence_models``).

All of them but the BatchNorm one pass Opacus' ``ModuleValidator`` (``tests/test_models.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from common.clinical_columns import parse_clinical_columns
from common.config import MedfedConfig, ModelConfig


def _conv_block(
    in_ch: int, out_ch: int, groups: int, standardize: bool = False, batch_norm: bool = False
) -> list[nn.Module]:
    conv: type[nn.Conv2d] = nn.Conv2d
    if standardize:  # imported here: it registers a grad sampler with Opacus
        from common.ws_conv import WSConv2d

        conv = WSConv2d
    norm = nn.BatchNorm2d(out_ch) if batch_norm else nn.GroupNorm(groups, out_ch)
    return [conv(in_ch, out_ch, kernel_size=3, padding=1), norm, nn.ReLU()]


class SmallCNN(nn.Module):
    """Three conv blocks (GroupNorm + ReLU, max-pool after the first two), GAP, linear.

    ``width`` 16 gives about 24k parameters (small enough that DP noise stays tolerable and
    a round takes seconds on one CPU core); ``width`` 32 about 93k.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        width: int = 16,
        standardize: bool = False,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        norm = {"standardize": standardize, "batch_norm": batch_norm}
        self.features = nn.Sequential(
            *_conv_block(in_channels, width, min(8, width // 4), **norm),
            nn.MaxPool2d(2),
            *_conv_block(width, 2 * width, 8, **norm),
            nn.MaxPool2d(2),
            *_conv_block(2 * width, 4 * width, 8, **norm),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class FusionCNN(nn.Module):
    """``SmallCNN`` image embedding ++ MLP(tabular features) -> MLP classifier."""

    def __init__(
        self, in_channels: int, num_classes: int, tabular_features: int, width: int = 16
    ) -> None:
        super().__init__()
        if tabular_features < 1:
            raise ValueError("fusion-cnn needs at least one tabular feature")
        self.image = SmallCNN(in_channels, num_classes, width).features
        self.tabular = nn.Sequential(nn.Linear(tabular_features, 16), nn.ReLU())
        self.classifier = nn.Sequential(
            nn.Linear(4 * width + 16, 32), nn.ReLU(), nn.Linear(32, num_classes)
        )

    def forward(self, x: torch.Tensor, tabular: torch.Tensor) -> torch.Tensor:
        joint = torch.cat([self.image(x), self.tabular(tabular)], dim=1)
        return self.classifier(joint)


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels // 2), channels)


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs) with GroupNorm."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _group_norm(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.norm2 = _group_norm(out_ch)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), _group_norm(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet18GN(nn.Module):
    """ResNet-18 for 28x28 inputs (MedMNIST's variant) with GroupNorm for DP-SGD."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 64) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False),
            _group_norm(width),
            nn.ReLU(),
        )
        stages: list[nn.Module] = []
        in_ch = width
        for index, out_ch in enumerate((width, 2 * width, 4 * width, 8 * width)):
            stride = 1 if index == 0 else 2
            stages += [BasicBlock(in_ch, out_ch, stride), BasicBlock(out_ch, out_ch, 1)]
            in_ch = out_ch
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.stages(self.stem(x))))


ModelBuilder = Callable[[int, int], nn.Module]

MODEL_REGISTRY: dict[str, ModelBuilder] = {
    "small-cnn": lambda in_ch, n_cls: SmallCNN(in_ch, n_cls, width=16),
    "small-cnn-ws": lambda in_ch, n_cls: SmallCNN(in_ch, n_cls, width=16, standardize=True),
    "cnn-medium": lambda in_ch, n_cls: SmallCNN(in_ch, n_cls, width=32),
    "cnn-medium-ws": lambda in_ch, n_cls: SmallCNN(in_ch, n_cls, width=32, standardize=True),
    "cnn-medium-bn": lambda in_ch, n_cls: SmallCNN(in_ch, n_cls, width=32, batch_norm=True),
    "resnet18-gn": lambda in_ch, n_cls: ResNet18GN(in_ch, n_cls),
    "scatter-cnn": lambda in_ch, n_cls: _scatter_cnn(in_ch, n_cls),
    "scatter-linear": lambda in_ch, n_cls: _scatter_linear(in_ch, n_cls),
    "seq-gru": lambda in_ch, n_cls: _sequence_model(in_ch, n_cls, "gru"),
    "seq-lstm": lambda in_ch, n_cls: _sequence_model(in_ch, n_cls, "lstm"),
}
# models that also take the encoded clinical features: (in_ch, n_cls, n_features) -> model
FUSION_REGISTRY: dict[str, Callable[[int, int, int], nn.Module]] = {
    "fusion-cnn": lambda in_ch, n_cls, n_tab: FusionCNN(in_ch, n_cls, n_tab),
}


def _scatter_cnn(in_channels: int, num_classes: int) -> nn.Module:
    from common.scatter_cnn import ScatterCNN  # kymatio is imported only for this model

    return ScatterCNN(in_channels, num_classes)


def _scatter_linear(in_channels: int, num_classes: int) -> nn.Module:
    from common.scatter_cnn import ScatterLinear

    return ScatterLinear(in_channels, num_classes)


def _sequence_model(in_channels: int, num_classes: int, cell: str) -> nn.Module:
    from common.sequence_models import FrameSequenceNet

    return FrameSequenceNet(in_channels, num_classes, cell=cell)


def build_model(config: ModelConfig, in_channels: int, tabular_features: int = 0) -> nn.Module:
    """Instantiate the registered model named in ``config``.

    ``tabular_features``: the encoded clinical width for fusion models
    (``common.clinical_columns.ClinicalColumns.width``), ignored by image-only models.
    """
    if config.name in FUSION_REGISTRY:
        return FUSION_REGISTRY[config.name](in_channels, config.num_classes, tabular_features)
    return MODEL_REGISTRY[config.name](in_channels, config.num_classes)  # names: MODEL_NAMES


def build_run_model(config: MedfedConfig, in_channels: int) -> nn.Module:
    """The run's model: ``build_model`` with the clinical width of ``data.clinical-columns``
    (the same at the server and at every site, whatever each site's data holds)."""
    width = parse_clinical_columns(config.data.clinical_columns).width
    return build_model(config.model, in_channels, width)
