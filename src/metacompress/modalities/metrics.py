"""Distortion measures, computed the way the codec literature reports them."""

from __future__ import annotations

import math

import numpy as np


def psnr(reference: np.ndarray, reconstruction: np.ndarray, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB of two arrays of the same shape (∞ when identical).

    Images are compared as their 8-bit integers, as CompressAI and COIN do.
    """
    if reference.shape != reconstruction.shape:
        raise ValueError(f"shapes differ: {reference.shape} vs {reconstruction.shape}")
    mse = float(np.mean((reference.astype(np.float64) - reconstruction.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)
