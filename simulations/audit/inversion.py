"""Gradient inversion: can the server rebuild a patient's image from a site's update?

The attack (an audit tool, not part of training) is "Inverting Gradients" (Geiping,
Bauermeister, Dröge & Moeller 2020, NeurIPS), the refinement of "Deep Leakage from
Gradients" (Zhu, Liu & Han 2019, NeurIPS): optimise a dummy image so that the gradient it
induces on the same model matches the observed one (1 - cosine similarity, plus a small
total-variation prior), with the label read off the classifier's bias gradient (iDLG,
Zhao, Mopuri & Bilen 2020). Written with torch autograd.

The observed update is a single-image batch of the site's model. Without DP it is the plain
gradient; with DP it is what Opacus' ``DPOptimizer`` makes of it at the site's settings
(per-sample clipping to ``max-grad-norm``, Gaussian noise of std ``noise-multiplier x
max-grad-norm``): the same code path as training, so the attack sees exactly what a site
would send.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from common.data.preprocess import model_logits
from simulations.audit.ssim import ssim


class InversionProbe(nn.Module):
    """The small CNN whose single-image update is attacked: two 3x3 ReLU convs, linear head.

    A linear layer over the flattened feature map (no global pooling) is the classic target
    of gradient inversion. The product's ``small-cnn`` ends in global average pooling, which
    makes the attack harder (SSIM 0.3-0.5 without DP after 300-1000 iterations in our trials),
    so the audit attacks this easier model: the worst case DP has to withstand.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, image_size: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 12, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(12, 12, 3, padding=1, stride=2),
            nn.ReLU(),
            nn.Flatten(),
        )
        side = (image_size + 1) // 2
        self.classifier = nn.Linear(12 * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@dataclass(frozen=True)
class InversionSettings:
    """Attack effort (Adam on the dummy image)."""

    iterations: int = 200
    learning_rate: float = 0.1
    total_variation: float = 1e-3
    seed: int = 0


@dataclass(frozen=True)
class Reconstruction:
    """One attacked image: the original, the attack's output and their SSIM."""

    original: np.ndarray  # (H, W) in [0, 1]
    reconstructed: np.ndarray
    ssim: float
    label_recovered: bool


def observed_gradient(
    model: nn.Module,
    image: torch.Tensor,
    label: torch.Tensor,
    *,
    noise_multiplier: float = 0.0,
    max_grad_norm: float = 1.0,
    dp: bool = False,
    seed: int = 0,
) -> list[torch.Tensor]:
    """The gradient a site's single-image step produces (through Opacus under DP)."""
    site_model = copy.deepcopy(model).train()
    criterion = nn.CrossEntropyLoss()
    if not dp:
        loss = criterion(model_logits(site_model, image[None]), label[None])
        return [g.detach() for g in torch.autograd.grad(loss, list(site_model.parameters()))]
    torch.manual_seed(seed)
    optimizer = torch.optim.SGD(site_model.parameters(), lr=1.0)
    loader = DataLoader(TensorDataset(image[None], label[None]), batch_size=1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Secure RNG turned off")
        warnings.filterwarnings("ignore", message=".*Full backward hook is firing")
        dp_model, dp_optimizer, _ = PrivacyEngine().make_private(
            module=site_model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            poisson_sampling=False,
        )
        dp_optimizer.zero_grad()
        criterion(model_logits(dp_model, image[None]), label[None]).backward()
        dp_optimizer.pre_step()  # clip per sample, add noise, average: p.grad is the update
    return [p.grad.detach().clone() for p in site_model.parameters()]


def _infer_label(model: nn.Module, gradient: list[torch.Tensor]) -> int:
    """iDLG: the true class is the only negative entry of the last bias's gradient."""
    return int(torch.argmin(gradient[-1]))


def _total_variation(image: torch.Tensor) -> torch.Tensor:
    return (image[..., 1:, :] - image[..., :-1, :]).abs().mean() + (
        image[..., :, 1:] - image[..., :, :-1]
    ).abs().mean()


def invert_gradient(
    model: nn.Module,
    gradient: list[torch.Tensor],
    shape: tuple[int, ...],
    settings: InversionSettings,
) -> tuple[torch.Tensor, int]:
    """Optimise a dummy image (C, H, W) whose gradient matches ``gradient``; return it."""
    attacked = copy.deepcopy(model).train()
    params = list(attacked.parameters())
    label = _infer_label(model, gradient)
    target = torch.tensor([label])
    generator = torch.Generator().manual_seed(settings.seed)
    latent = (0.1 * torch.randn((1, *shape), generator=generator)).requires_grad_(True)
    optimizer = torch.optim.Adam([latent], lr=settings.learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings.iterations)
    observed = torch.cat([g.flatten() for g in gradient])
    for _ in range(settings.iterations):
        optimizer.zero_grad()
        dummy = torch.sigmoid(latent)
        loss = nn.functional.cross_entropy(model_logits(attacked, dummy), target)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        flat = torch.cat([g.flatten() for g in grads])
        mismatch = 1 - nn.functional.cosine_similarity(flat, observed, dim=0)
        (mismatch + settings.total_variation * _total_variation(dummy)).backward()
        optimizer.step()
        schedule.step()
    return torch.sigmoid(latent).detach()[0], label


def attack_image(
    model: nn.Module,
    image: torch.Tensor,
    label: int,
    settings: InversionSettings,
    *,
    dp: bool,
    noise_multiplier: float,
    max_grad_norm: float,
) -> Reconstruction:
    """Observe one image's update (with or without DP), invert it, score it by SSIM."""
    gradient = observed_gradient(
        model,
        image,
        torch.tensor(label),
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        dp=dp,
        seed=settings.seed,
    )
    rebuilt, guessed = invert_gradient(model, gradient, tuple(image.shape), settings)
    original = image[0].numpy()
    rebuilt_2d = rebuilt[0].numpy()
    return Reconstruction(original, rebuilt_2d, ssim(original, rebuilt_2d), guessed == label)
