"""Structural similarity (SSIM) of two grayscale images in [0, 1].

scikit-image is not a dependency, so this is the standard definition (Wang, Bovik, Sheikh &
Simoncelli 2004, "Image quality assessment: from error visibility to structural
similarity", IEEE TIP) with scikit-image's default settings for ``structural_similarity``:
a 7x7 uniform window, K1 = 0.01, K2 = 0.03, sample covariances (N / (N - 1)), the mean over
the windows that fit entirely inside the image. 1.0 means identical; about 0 means no
shared structure (it can be negative).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

WINDOW = 7
K1, K2 = 0.01, 0.03


def ssim(reference: np.ndarray, test: np.ndarray, data_range: float = 1.0) -> float:
    """Mean SSIM of two equally sized 2-D images (at least 7x7)."""
    if reference.shape != test.shape or reference.ndim != 2:
        raise ValueError(f"need two 2-D images of one shape, got {reference.shape}, {test.shape}")
    if min(reference.shape) < WINDOW:
        raise ValueError(f"images must be at least {WINDOW}x{WINDOW}")
    x = sliding_window_view(reference.astype(np.float64), (WINDOW, WINDOW))
    y = sliding_window_view(test.astype(np.float64), (WINDOW, WINDOW))
    n = WINDOW * WINDOW
    mean_x, mean_y = x.mean(axis=(-2, -1)), y.mean(axis=(-2, -1))
    correction = n / (n - 1)
    var_x = ((x * x).mean(axis=(-2, -1)) - mean_x**2) * correction
    var_y = ((y * y).mean(axis=(-2, -1)) - mean_y**2) * correction
    cov = ((x * y).mean(axis=(-2, -1)) - mean_x * mean_y) * correction
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    numerator = (2 * mean_x * mean_y + c1) * (2 * cov + c2)
    denominator = (mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2)
    return float((numerator / denominator).mean())
