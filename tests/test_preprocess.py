"""common.data.preprocess: resize modes, channel conversion, depth resampling (torch only)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.data.preprocess import resample_depth, to_model_input


def test_pad_keeps_the_aspect_ratio_and_stretch_fills_the_square() -> None:
    wide = np.ones((10, 40), dtype=np.float32)  # a white 1:4 strip

    padded = to_model_input(wide, 16, 1, "pad")
    stretched = to_model_input(wide, 16, 1, "stretch")

    assert padded.shape == stretched.shape == (1, 16, 16)
    assert float(padded.mean()) == pytest.approx(0.25, abs=0.03)  # black bars above and below
    assert float(stretched.mean()) == pytest.approx(1.0)


def test_colour_becomes_luma_and_grey_is_repeated_to_rgb() -> None:
    red = np.zeros((8, 8, 3), dtype=np.float32)
    red[..., 0] = 1.0

    grey = to_model_input(red, 8, 1)
    rgb = to_model_input(np.full((8, 8), 0.5, dtype=np.float32), 8, 3)

    assert torch.allclose(grey, torch.full((1, 8, 8), 0.299))
    assert rgb.shape == (3, 8, 8) and torch.allclose(rgb, torch.full((3, 8, 8), 0.5))


def test_depth_resampling_keeps_the_end_slices_and_repeats_a_single_image() -> None:
    frames = torch.stack([torch.full((1, 4, 4), float(i)) for i in range(3)], dim=1)

    deeper = resample_depth(frames, 5)
    single = resample_depth(frames[:, :1], 4)

    assert deeper.shape == (1, 5, 4, 4)
    assert [float(deeper[0, d, 0, 0]) for d in range(5)] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert single.shape == (1, 4, 4, 4) and float(single.max()) == 0.0
