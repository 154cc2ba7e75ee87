"""Distortion and rate–distortion measures, computed the way the codec literature reports them.

The bottom layer of the package: numpy and torch only (``pytorch-msssim`` and ``bjontegaard`` are
imported when first called), nothing else of metacompress.

- :func:`psnr` — the one PSNR of the package, in dB; the peak is the dtype's full range for
  integers (255 for uint8, 65,535 for uint16) and 1.0 for floats unless given;
  :func:`psnr_from_mse` is the same formula for an already computed mean squared error.
- :func:`ms_ssim` — multi-scale SSIM (Wang et al. 2003, 5 scales) of 8-bit images, as CompressAI
  reports it; ``None`` for images under 161 pixels on a side (see there why not fewer scales).
- :func:`rmse` — root-mean-square error in the data's own (physical) units.
- :func:`snr_db` — signal-to-noise ratio of audio (signal energy over error energy), in dB.
- :func:`bd_rate` — Bjøntegaard-delta rate of one rate–quality curve against a reference curve,
  over the quality interval :func:`bd_overlap` (None where the curves do not overlap).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch

MS_SSIM_MIN_SIDE = 161  # 5 scales of an 11-pixel window: the smallest side must exceed (11 - 1) × 2⁴
BD_METHOD = "akima"  # the interpolation of the JVET common test conditions (the package's recommendation)

Curve = tuple[Sequence[float], Sequence[float]]  # (rates, qualities), one entry per operating point


def _check_shapes(reference: np.ndarray, reconstruction: np.ndarray) -> None:
    if np.shape(reference) != np.shape(reconstruction):
        raise ValueError(f"shapes differ: {np.shape(reference)} vs {np.shape(reconstruction)}")


def default_peak(dtype) -> float:
    """The peak value PSNR uses for data of ``dtype``: an integer type's maximum (255 for uint8,
    65,535 for uint16), 1.0 for floating point (values in [0, 1])."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        return float(np.iinfo(dtype).max)
    if np.issubdtype(dtype, np.floating) or dtype == np.bool_:
        return 1.0
    raise TypeError(f"no default PSNR peak for {dtype}; pass peak=")


def psnr_from_mse(mse: float, peak: float = 1.0) -> float:
    """PSNR in dB of a mean squared error (∞ for an error of 0)."""
    return math.inf if mse <= 0 else 10.0 * math.log10(peak * peak / mse)


def mse(reference: np.ndarray, reconstruction: np.ndarray) -> float:
    """Mean squared error of two arrays of the same shape, computed in float64."""
    _check_shapes(reference, reconstruction)
    difference = np.asarray(reference, dtype=np.float64) - np.asarray(reconstruction, dtype=np.float64)
    return float(np.mean(difference ** 2))


def psnr(reference: np.ndarray, reconstruction: np.ndarray, peak: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB of two arrays of the same shape (∞ when identical).

    ``peak`` defaults to :func:`default_peak` of ``reference``'s dtype: 8-bit images are compared as
    their integers with peak 255, as CompressAI and COIN do; 16-bit data with 65,535; float data
    with 1.0. Pass ``peak`` for anything else (audio in [-1, 1]: 2.0; a volume: its own range).
    """
    if peak is None:
        peak = default_peak(np.asarray(reference).dtype)
    return psnr_from_mse(mse(reference, reconstruction), peak)


def rmse(reference: np.ndarray, reconstruction: np.ndarray) -> float:
    """Root-mean-square error in the data's own units (e.g. m/s, °C), ignoring missing (NaN) points."""
    difference = np.asarray(reconstruction, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    return float(np.sqrt(np.nanmean(difference ** 2)))


def snr_db(reference: np.ndarray, reconstruction: np.ndarray) -> float:
    """Signal-to-noise ratio in dB: energy of ``reference`` over energy of the error (∞ when
    identical, -∞ for a silent reference). Unlike PSNR it does not depend on a peak, so a quiet
    clip is not flattered by the headroom it leaves unused."""
    _check_shapes(reference, reconstruction)
    signal = np.asarray(reference, dtype=np.float64)
    noise = float(np.sum((signal - np.asarray(reconstruction, dtype=np.float64)) ** 2))
    energy = float(np.sum(signal ** 2))
    if noise == 0:
        return math.inf
    return -math.inf if energy == 0 else 10.0 * math.log10(energy / noise)


def ms_ssim(reference: np.ndarray, reconstruction: np.ndarray) -> float | None:
    """Multi-scale SSIM (5 scales, Gaussian window 11 px σ 1.5, the weights of Wang et al. 2003)
    of two images (H, W) or (H, W, C) of integers, in [0, 1]; 1.0 when identical.

    Computed by ``pytorch-msssim`` on the images scaled to [0, 1] by their dtype's peak (255 for
    uint8), with data range 1 — what CompressAI reports as ``ms-ssim-rgb``.

    Returns None when the smaller side is under 161 pixels (``MS_SSIM_MIN_SIDE``): the fifth scale
    is then smaller than the window. We do not fall back to fewer scales with renormalized weights:
    the weights were fitted for 5 scales, so such a number would compare with no published
    MS-SSIM (and CIFAR-10 work, COIN++ included, reports PSNR only).
    """
    _check_shapes(reference, reconstruction)
    reference, reconstruction = np.asarray(reference), np.asarray(reconstruction)
    if reference.ndim not in (2, 3):
        raise ValueError(f"ms_ssim takes (H, W) or (H, W, C) images, not shape {reference.shape}")
    if min(reference.shape[:2]) < MS_SSIM_MIN_SIDE:
        return None
    from pytorch_msssim import ms_ssim as _ms_ssim

    peak = default_peak(reference.dtype)

    def tensor(image: np.ndarray) -> torch.Tensor:
        image = image if image.ndim == 3 else image[..., None]
        return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32) / peak).permute(2, 0, 1)[None]

    with torch.no_grad():
        return float(_ms_ssim(tensor(reference), tensor(reconstruction), data_range=1.0, size_average=True))


def rd_frontier(curve: Curve) -> tuple[np.ndarray, np.ndarray]:
    """The points of ``curve`` where quality strictly improves with rate, sorted by rate.

    A point that costs more bits than another for no better quality (a saturated curve, a knob
    setting that lands on the same file) is dominated: at equal quality the cheaper point is the
    codec's rate. BD-rate interpolates rate as a function of quality, which needs this order.
    """
    rates, qualities = (np.asarray(v, dtype=np.float64) for v in curve)
    if rates.shape != qualities.shape or rates.ndim != 1:
        raise ValueError(f"a curve is two sequences of equal length, not shapes {rates.shape} and {qualities.shape}")
    keep = np.isfinite(rates) & np.isfinite(qualities) & (rates > 0)
    order = np.argsort(rates[keep], kind="stable")
    kept_rates, kept_qualities = [], []
    for rate, quality in zip(rates[keep][order], qualities[keep][order]):
        if not kept_qualities or quality > kept_qualities[-1]:
            if kept_rates and rate == kept_rates[-1]:  # same rate, better quality: replaces it
                kept_rates.pop(), kept_qualities.pop()
            kept_rates.append(rate)
            kept_qualities.append(quality)
    return np.array(kept_rates), np.array(kept_qualities)


def bd_overlap(reference_curve: Curve, test_curve: Curve) -> tuple[float, float] | None:
    """The quality interval :func:`bd_rate` averages over: where both curves' frontiers (two points
    or more) reach; None where they do not overlap. Report it with the BD-rate: −70 % over 0.1 dB
    is a far weaker claim than over 10 dB."""
    reference, test = rd_frontier(reference_curve), rd_frontier(test_curve)
    if len(reference[0]) < 2 or len(test[0]) < 2:
        return None
    low, high = max(reference[1][0], test[1][0]), min(reference[1][-1], test[1][-1])
    return (float(low), float(high)) if high > low else None


def bd_rate(reference_curve: Curve, test_curve: Curve) -> float | None:
    """Bjøntegaard-delta rate in per cent: the average rate change of ``test_curve`` against
    ``reference_curve`` at equal quality (negative: the test codec needs fewer bits).

    Each curve is ``(rates, qualities)`` with quality increasing for better (PSNR in dB, MS-SSIM).
    Log-rate is interpolated as a function of quality (Akima, the ``bjontegaard`` package) and
    averaged over the quality interval both curves cover, after :func:`rd_frontier` keeps each
    curve's non-dominated points. Returns None where the curves' quality ranges do not overlap or a
    curve has fewer than two such points: the figure is then undefined, not zero.
    """
    if bd_overlap(reference_curve, test_curve) is None:
        return None
    reference, test = rd_frontier(reference_curve), rd_frontier(test_curve)
    import bjontegaard

    with warnings.catch_warnings():  # the package warns about partial overlap; the caller sees the ranges
        warnings.simplefilter("ignore")
        value = bjontegaard.bd_rate(reference[0], reference[1], test[0], test[1], method=BD_METHOD,
                                    require_matching_points=False, min_overlap=0)
    return float(value) if math.isfinite(value) else None
