"""Grad-CAM points at the class evidence: a trained model's heat-map peak lies in the blob.

Synthetic task (made here, seeded): 32x32 images of smooth noise; positive images carry one
bright disc (radius 5 px) at a random place, negative ones a dimmer square of the same area
elsewhere, so a model must find and tell apart the shapes rather than the mean brightness.
A ``small-cnn`` is trained for a few seconds; on held-out positive images the peak of the
Grad-CAM map for the positive class must fall inside the disc in most of them (measured:
see ``MIN_SHARE`` and the report; random peaks would land inside ~8% of the time).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common.config import ModelConfig
from common.data.preprocess import model_logits
from common.gradcam import explained_layer, grad_cam, last_conv_layer, write_overlay
from common.models import build_model

SIZE = 32
RADIUS = 5.0
MIN_SHARE = 0.8  # of held-out positive images whose heat-map peak lies inside the disc


def _images(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Images (N, 1, S, S) in [0, 1], labels, and each image's object centre (row, col)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    coarse = torch.from_numpy(rng.standard_normal((count, 1, 4, 4)).astype(np.float32))
    background = 0.35 + 0.06 * F.interpolate(coarse, size=(SIZE, SIZE), mode="bicubic")[:, 0]
    images = background.numpy() + rng.normal(0, 0.03, (count, SIZE, SIZE)).astype(np.float32)
    labels = rng.integers(0, 2, count)
    centres = rng.uniform(RADIUS + 2, SIZE - RADIUS - 3, (count, 2)).astype(np.float32)
    for i, (cy, cx) in enumerate(centres):
        if labels[i]:
            disc = np.clip(RADIUS + 0.5 - np.hypot(yy - cy, xx - cx), 0, 1)
            images[i] += 0.35 * disc
        else:
            half = RADIUS * np.sqrt(np.pi) / 2
            square = (np.abs(yy - cy) <= half) & (np.abs(xx - cx) <= half)
            images[i] += 0.2 * square
    tensor = torch.from_numpy(np.clip(images, 0, 1)).unsqueeze(1)
    return tensor, torch.from_numpy(labels), centres


def _trained_model(name: str = "small-cnn") -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name), in_channels=1)
    images, labels, _ = _images(512, seed=1)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _epoch in range(6):
        order = torch.randperm(len(images))
        for start in range(0, len(images), 32):
            batch = order[start : start + 32]
            loss = F.cross_entropy(model_logits(model, images[batch]), labels[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()


def test_last_conv_layer_is_the_deepest_convolution():
    model = build_model(ModelConfig(name="small-cnn"), in_channels=1)
    assert last_conv_layer(model) is model.features[8]


# scatter-linear has no convolution: Grad-CAM looks at its normalised coefficient maps (8 x 8
# for 32 x 32 input, whose fixed transform carries no gradient of its own); measured 79 % of
# its peaks inside the disc, all within two radii: coarser maps than a CNN's
@pytest.mark.parametrize(("name", "min_share"), [("small-cnn", MIN_SHARE), ("scatter-linear", 0.6)])
def test_heat_map_peak_falls_inside_the_blob(tmp_path, name, min_share):
    model = _trained_model(name)
    images, labels, centres = _images(200, seed=2)
    positive = labels == 1
    with torch.no_grad():
        accuracy = (model_logits(model, images).argmax(1) == labels).float().mean().item()
    assert accuracy > 0.9  # the model learnt the task (else the location check means nothing)

    heat = grad_cam(model, images[positive], torch.ones(int(positive.sum()), dtype=torch.long))

    assert heat.shape == (int(positive.sum()), SIZE, SIZE)
    assert heat.min() >= 0.0 and heat.max() <= 1.0
    peaks = np.array([np.unravel_index(np.argmax(h), h.shape) for h in heat], dtype=np.float32)
    distance = np.hypot(*(peaks - centres[positive.numpy()]).T)
    share = float(np.mean(distance <= RADIUS))
    print(f"Grad-CAM peak inside the blob: {share:.1%} of {len(heat)} positive images")
    assert share >= min_share
    assert not explained_layer(model)._forward_hooks
    write_overlay(images[positive][0], heat[0], tmp_path / "overlay.png", "opacity 0.97")
    assert (tmp_path / "overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_grad_cam_leaves_the_model_as_it_was():
    model = build_model(ModelConfig(name="small-cnn"), in_channels=1).train()
    images = torch.rand(3, 1, SIZE, SIZE)
    grad_cam(model, images)
    assert model.training
    assert not last_conv_layer(model)._forward_hooks
