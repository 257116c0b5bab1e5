"""``scatter-cnn``, ``scatter-linear``: models on fixed wavelet scattering features (DP levers).

Tramèr & Boneh (2021, "Differentially Private Learning Needs Better Features (or Much More
Data)") showed that a CNN trained with DP-SGD on the *fixed*, data-independent features of a
ScatterNet beats end-to-end CNNs at the same ε on small image data sets: nothing of the
first layers has to be learned through the noise. The scattering transform is kymatio's
(Oyallon & Mallat's ScatterNet, J = 2, 8 angles: 81 channels per input channel at a quarter
of the resolution); it has no trainable parameters, so Opacus sees only the CNN on top and its
per-sample gradients, clipping and noise are unchanged.

The filters depend on the image size, so the transform is built on first use for each input
shape (and device), once per process, and shared by every model instance. They are buffers
the run derives, not weights it learns: they never enter the state dict (and so never travel
to the server or into a checkpoint).

The transform costs more CPU than the CNN on top (FFTs at 81 filters per channel), and a
site trains on the same images round after round: each image's coefficients are kept in a
bounded in-process memo keyed by a digest of its pixels (``FEATURE_MEMO_BYTES``), so an
image is transformed once per process, not once per round. An augmented view is a new
image and is transformed afresh. The memo lives in the site's process, as the images do.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from functools import lru_cache

import torch
from torch import nn

SCATTER_J = 2  # two octaves: features at 1/4 of the input resolution
SCATTER_ANGLES = 8
CHANNELS_PER_INPUT = (
    1 + SCATTER_J * SCATTER_ANGLES + SCATTER_ANGLES**2 * SCATTER_J * (SCATTER_J - 1) // 2
)


@lru_cache(maxsize=8)
def _scattering(height: int, width: int, device: str) -> nn.Module:
    """The transform for one input shape on one device, built once per process (~0.2 s)."""
    # Imported here: kymatio's package-level torch frontend also imports its 3D transform,
    # whose scipy import fails on current scipy; the 2D frontend alone does not need it.
    from kymatio.scattering2d.frontend.torch_frontend import ScatteringTorch2D

    scattering = ScatteringTorch2D(J=SCATTER_J, shape=(height, width), L=SCATTER_ANGLES)
    for name in list(scattering._buffers):  # filters: derived, never sent or saved
        buffer = scattering._buffers.pop(name)
        scattering.register_buffer(name, buffer, persistent=False)
    return scattering.to(device)


FEATURE_MEMO_BYTES = 512 * 2**20  # per process; least recently used coefficients go first
# images transformed at once: the FFTs' intermediates of a whole DP batch (1,000+ images) took
# a simulated site's process past 2 GB; in chunks the peak stays at a few hundred MB
SCATTER_CHUNK = 128


class _FeatureMemo:
    """Scattering coefficients by pixel digest, bounded in bytes (LRU)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self._bytes = 0

    def get(self, key: bytes) -> torch.Tensor | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: bytes, value: torch.Tensor) -> None:
        size = value.numel() * value.element_size()
        if key in self._items or size > self.max_bytes:
            return
        self._items[key] = value
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, evicted = self._items.popitem(last=False)
            self._bytes -= evicted.numel() * evicted.element_size()


_MEMO = _FeatureMemo(FEATURE_MEMO_BYTES)


def _digest(image: torch.Tensor) -> bytes:
    shape = ",".join(map(str, image.shape)).encode()
    pixels = image.detach().cpu().contiguous().numpy().tobytes()
    return hashlib.blake2b(pixels + shape, digest_size=16).digest() + str(image.device).encode()


class ScatterFeatures(nn.Module):
    """``(N, C, H, W)`` -> ``(N, 81 C, H/4, W/4)`` scattering coefficients (no parameters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keys = [_digest(image) for image in x]
        cached = [_MEMO.get(key) for key in keys]
        missing = [i for i, value in enumerate(cached) if value is None]
        if missing:
            scattering = _scattering(int(x.shape[-2]), int(x.shape[-1]), str(x.device))
            for start in range(0, len(missing), SCATTER_CHUNK):
                chunk = missing[start : start + SCATTER_CHUNK]
                with torch.no_grad():  # a fixed transform of the input: nothing to differentiate
                    fresh = scattering(x[chunk].contiguous())
                for index, value in zip(chunk, fresh, strict=True):
                    value = value.clone()  # its own storage: the memo keeps no chunk alive
                    cached[index] = value
                    _MEMO.put(keys[index], value)
        features = torch.stack(cached)  # type: ignore[arg-type]
        n, c, k, h, w = features.shape
        return features.reshape(n, c * k, h, w)


class ScatterCNN(nn.Module):
    """Scattering features -> GroupNorm -> two conv blocks (GroupNorm + ReLU) -> GAP -> linear.

    The GroupNorm on the features normalises each image's coefficients on its own (groups of
    9 channels, as Tramèr & Boneh's 27 groups of 243): no statistics of the data set, so no
    privacy cost. ``width`` 32 gives about 42k trainable parameters for grayscale input.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        channels = CHANNELS_PER_INPUT * in_channels
        self.scatter = ScatterFeatures()
        self.features = nn.Sequential(
            nn.GroupNorm(channels // 9, channels, affine=False),
            nn.Conv2d(channels, width, kernel_size=3, padding=1),
            nn.GroupNorm(8, width),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, kernel_size=3, padding=1),
            nn.GroupNorm(8, 2 * width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.scatter(x)))


LINEAR_SIDE = 7  # the coefficient maps pooled to 7 x 7 (a 28 x 28 image's maps, unchanged)


class ScatterLinear(nn.Module):
    """Scattering features -> GroupNorm -> a linear classifier (Tramèr & Boneh's ScatterNet+linear).

    The paper's strongest model at small ε on small data: the fewest trainable weights, so
    DP-SGD's noise, whose norm grows with the square root of their count, is smallest. The
    maps are average-pooled to ``LINEAR_SIDE`` x ``LINEAR_SIDE`` (an identity for 28 x 28
    images) so the weight count does not depend on the image size: 81 C x 49 inputs per class
    (about 8k parameters for a grayscale binary task).
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        channels = CHANNELS_PER_INPUT * in_channels
        self.scatter = ScatterFeatures()
        self.features = nn.Sequential(
            nn.GroupNorm(channels // 9, channels, affine=False),
            nn.AdaptiveAvgPool2d(LINEAR_SIDE),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(channels * LINEAR_SIDE**2, num_classes)

    @property
    def cam_layer(self) -> nn.Module:
        """The layer Grad-CAM explains (``common.gradcam``): the normalised coefficient maps,
        the last spatial maps before the classifier (there is no convolution)."""
        return self.features[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.scatter(x)))
