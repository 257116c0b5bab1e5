"""A small conditional VAE: the on-site generator behind ``augment.generator = "cvae"``.

Fully connected encoder and decoder over the flattened image, each conditioned on the class
(one-hot, concatenated to its input). Only ``nn.Linear`` layers, so Opacus computes its
per-sample gradients with its standard hooks (DP-SGD training: ``client.augment``).
Images are ``(N, C, H, W)`` in [0, 1]; the decoder's sigmoid keeps samples in [0, 1], and
the reconstruction term is Bernoulli (binary cross-entropy on the [0, 1] intensities).
It lives in ``common`` as a model definition only: it is trained and used at a site, and its
weights never enter a message.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

HIDDEN = 256
LATENT = 16


class ConditionalVAE(nn.Module):
    """``x, y -> (reconstruction logits, mu, logvar)``; :meth:`sample` draws images of a class."""

    def __init__(
        self,
        shape: tuple[int, int, int],
        num_classes: int,
        *,
        hidden: int = HIDDEN,
        latent: int = LATENT,
    ) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.num_classes = num_classes
        self.latent = latent
        size = shape[0] * shape[1] * shape[2]
        self.encoder = nn.Sequential(nn.Linear(size + num_classes, hidden), nn.ReLU())
        self.mu = nn.Linear(hidden, latent)
        self.logvar = nn.Linear(hidden, latent)
        self.decoder = nn.Sequential(
            nn.Linear(latent + num_classes, hidden), nn.ReLU(), nn.Linear(hidden, size)
        )

    def _onehot(self, labels: torch.Tensor) -> torch.Tensor:
        return F.one_hot(labels.long(), self.num_classes).float()

    def decode(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Reconstruction logits, flattened ``(N, C*H*W)``."""
        return self.decoder(torch.cat([z, self._onehot(labels)], dim=1))

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        flat = images.reshape(len(images), -1)
        hidden = self.encoder(torch.cat([flat, self._onehot(labels)], dim=1))
        mu, logvar = self.mu(hidden), self.logvar(hidden).clamp(-8.0, 8.0)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decode(z, labels), mu, logvar

    @torch.no_grad()
    def sample(
        self, labels: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Images ``(len(labels), C, H, W)`` in [0, 1] of the given classes."""
        z = torch.randn(len(labels), self.latent, generator=generator)
        return torch.sigmoid(self.decode(z, labels)).reshape(len(labels), *self.shape)


def vae_loss(
    logits: torch.Tensor, images: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor
) -> torch.Tensor:
    """Mean over the batch of (Bernoulli reconstruction + KL) per image (0 for no image)."""
    flat = images.reshape(len(images), -1)
    reconstruction = F.binary_cross_entropy_with_logits(logits, flat, reduction="none").sum(1)
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)
    return (reconstruction + kl).sum() / max(len(images), 1)
