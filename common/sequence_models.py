"""Sequence models for ordered stacks (``data.frames = "stack"``): frame encoder + RNN.

``FrameSequenceNet`` takes ``(N, C, D, H, W)`` stacks (D ordered frames or slices, see
``common.data.volumes``). Each frame goes through ``small-cnn``'s GroupNorm conv blocks
(``common.models.SmallCNN``), with global *max* instead of average pooling so that a small
focal finding stands out of its frame's 64-value embedding; a GRU or LSTM (hidden size 32)
reads the D embeddings in order and a linear layer classifies its last hidden state.
About 33k parameters (GRU) / 36k (LSTM).

The recurrent layer is Opacus' ``DPGRU`` / ``DPLSTM``: ``nn.GRU`` / ``nn.LSTM`` keep their
weights in fused cuDNN-style kernels for which Opacus has no per-sample gradients, while the
DP layers are built from ``nn.Linear`` pieces that it can clip per sample. Without DP they
train like the plain layers.

The encoder is applied frame by frame (D calls on a batch of N), not to the frames folded
into one batch of N x D: Opacus' hooks take the first dimension of a layer's input as the
sample index, so a folded batch would clip each *frame* as if it were a sample, and the
guarantee would no longer be per study. Called D times, the hooks add up each sample's D
contributions, which is its true per-sample gradient (``tests/test_sequence_models.py``
checks this against one-sample-at-a-time gradients).
"""

from __future__ import annotations

import torch
from opacus.layers import DPGRU, DPLSTM
from torch import nn

from common.models import SmallCNN

CELLS = ("gru", "lstm")


class FrameSequenceNet(nn.Module):
    """Per-frame GroupNorm CNN encoder -> GRU / LSTM over the frames -> linear classifier."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        cell: str = "gru",
        width: int = 16,
        hidden: int = 32,
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"unknown recurrent cell {cell!r} (expected one of {CELLS})")
        blocks = list(SmallCNN(in_channels, num_classes, width=width).features)
        # global max instead of average pooling: a small focal finding in one frame must
        # stand out of that frame's embedding, not be averaged away by the background
        pool = next(i for i, m in enumerate(blocks) if isinstance(m, nn.AdaptiveAvgPool2d))
        blocks[pool] = nn.AdaptiveMaxPool2d(1)
        self.encoder = nn.Sequential(*blocks)
        recurrent = DPGRU if cell == "gru" else DPLSTM
        self.rnn = recurrent(4 * width, hidden, batch_first=True)
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(
                f"a sequence model takes (N, C, D, H, W) stacks (data.frames=stack), "
                f"got a tensor of shape {tuple(x.shape)}"
            )
        frames = [self.encoder(x[:, :, index]) for index in range(x.shape[2])]
        output, _ = self.rnn(torch.stack(frames, dim=1))  # (N, D, hidden)
        return self.classifier(output[:, -1])
