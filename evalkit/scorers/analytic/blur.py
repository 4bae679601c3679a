"""Gaussian blur in numpy: the soft sprite hypotheses of the template bank, and the stand-ins for
decoder artefacts that the tests and the validation harness degrade clean renders with."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def _gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of the last two axes (zero outside)."""
    if sigma <= 0:
        return x
    r = int(math.ceil(3 * sigma))
    k = np.exp(-(np.arange(-r, r + 1) ** 2) / (2 * sigma**2))
    k /= k.sum()
    h, w = x.shape[-2:]
    p = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(r, r), (0, 0)])
    x = sum(k[i] * p[..., i : i + h, :] for i in range(2 * r + 1))
    p = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, 0), (r, r)])
    return sum(k[i] * p[..., :, i : i + w] for i in range(2 * r + 1))


def degrade(
    images: np.ndarray,
    blur: float = 0.0,
    noise: float = 0.0,
    gain: float = 1.0,
    cast: Sequence[float] = (0.0, 0.0, 0.0),
    seed: int = 0,
) -> np.ndarray:
    """Stand-ins for decoder artefacts on uint8 renders ``(N, 32, 32, 3)``: Gaussian blur (std in
    px), a contrast gain around 0, an additive colour cast and Gaussian pixel noise (std, 0–255)."""
    x = images.astype(np.float32)
    if blur > 0:
        x = np.moveaxis(_gaussian_blur(np.moveaxis(x, -1, 1), blur), 1, -1)
    x = x * gain + np.asarray(cast, np.float32)
    if noise > 0:
        x = x + noise * np.random.default_rng(seed).standard_normal(x.shape, dtype=np.float32)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)
