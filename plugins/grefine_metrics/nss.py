"""Natural-scene-statistics building blocks shared by BRISQUE and NIQE.

* MSCN coefficients (mean-subtracted, contrast-normalised luminance; Mittal et al. 2012, Eq. 1).
* Generalised-Gaussian (GGD) and asymmetric-GGD (AGGD) moment-matching fits (Lasmar et al. 2009).
* Paired products of neighbouring MSCN coefficients in four orientations.
* A bicubic 2x downscale identical to OpenCV's ``cv2.resize(..., fx=0.5, fy=0.5, INTER_CUBIC)``.

Everything is numpy/scipy, float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, optimize, special

#: BRISQUE/NIQE local window: 7x7 Gaussian, sigma 7/6 (separable; normalised to sum 1).
WINDOW_RADIUS = 3
WINDOW_SIGMA = 7.0 / 6.0


def gaussian_window(radius: int = WINDOW_RADIUS, sigma: float = WINDOW_SIGMA) -> np.ndarray:
    """The normalised 1-D Gaussian of ``2 * radius + 1`` taps."""
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-(x**2) / (2.0 * sigma**2))
    return w / w.sum()


def _blur(image: np.ndarray, window: np.ndarray, padding: str) -> np.ndarray:
    mode = {"zero": "constant", "replicate": "nearest"}[padding]
    out = ndimage.correlate1d(image, window, axis=0, mode=mode, cval=0.0)
    return ndimage.correlate1d(out, window, axis=1, mode=mode, cval=0.0)


def mscn(
    image: np.ndarray, c: float, window: np.ndarray | None = None, padding: str = "zero"
) -> np.ndarray:
    """MSCN coefficients ``(I - mu) / (sigma + c)`` of a 2-D luminance image.

    ``mu`` and ``sigma`` are the Gaussian-weighted local mean and standard deviation, with
    ``sigma = sqrt(|E[I^2] - mu^2|)``.

    :param image: ``(H, W)`` float luminance.
    :param c: stabilising constant (``1/255`` for images in [0, 1], ``1`` for [0, 255]).
    :param window: 1-D separable window (default :func:`gaussian_window`).
    :param padding: ``"zero"`` (BRISQUE, scikit-video's NIQE: a "same" convolution) or
        ``"replicate"`` (MATLAB NIQE's ``imfilter(..., 'replicate')``).
    :returns: ``(H, W)`` float64.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"mscn expects a 2-D luminance image, got shape {img.shape}")
    if padding not in ("zero", "replicate"):
        raise ValueError(f"padding must be 'zero' or 'replicate', got {padding!r}")
    w = gaussian_window() if window is None else np.asarray(window, dtype=np.float64)
    mu = _blur(img, w, padding)
    sigma = np.sqrt(np.abs(_blur(img * img, w, padding) - mu * mu))
    return (img - mu) / (sigma + c)


def _phi(alpha: np.ndarray | float) -> np.ndarray | float:
    """``Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a))``: increases from 0 to 3/4 as ``a`` grows."""
    a = np.asarray(alpha, dtype=np.float64)
    return np.exp(2 * special.gammaln(2 / a) - special.gammaln(1 / a) - special.gammaln(3 / a))


ALPHA_RANGE = (0.05, 100.0)


def solve_shape(ratio: float) -> float:
    """The GGD shape ``alpha`` with ``phi(alpha) == ratio`` (clamped to :data:`ALPHA_RANGE`)."""
    if not np.isfinite(ratio):
        return float("nan")
    lo, hi = ALPHA_RANGE
    if ratio <= _phi(lo):
        return lo
    if ratio >= _phi(hi):
        return hi
    return float(optimize.brentq(lambda a: float(_phi(a)) - ratio, lo, hi, xtol=1e-12))


@dataclass(frozen=True)
class AGGDFit:
    """Moment-matching fit of an asymmetric generalised Gaussian.

    :ivar alpha: shape; :ivar sigma_left, sigma_right: RMS of the negative / non-negative samples;
    :ivar beta_left, beta_right: the AGGD scale parameters ``sigma * sqrt(G(1/a) / G(3/a))``;
    :ivar mean: the AGGD mean ``(beta_r - beta_l) * G(2/a) / G(1/a)``.
    """

    alpha: float
    sigma_left: float
    sigma_right: float
    beta_left: float
    beta_right: float
    mean: float


def aggd_fit(samples: np.ndarray, zero_is_right: bool = True) -> AGGDFit:
    """Fit an AGGD to ``samples`` by moment matching.

    ``gamma = sigma_l / sigma_r``, ``r = (E|x|)^2 / E[x^2]``,
    ``R = r (gamma^3 + 1)(gamma + 1) / (gamma^2 + 1)^2`` and ``alpha`` solves ``phi(alpha) = R``.
    All-zero input gives NaN parameters (no shape can be estimated).

    :param zero_is_right: count exact zeros in the right side's RMS (BRISQUE, scikit-video) or in
        neither side (MATLAB's ``vec(vec > 0)``).
    """
    x = np.asarray(samples, dtype=np.float64).ravel()
    neg = x[x < 0]
    pos = x[x >= 0] if zero_is_right else x[x > 0]
    sl = float(np.sqrt(np.mean(neg * neg))) if neg.size else 0.0
    sr = float(np.sqrt(np.mean(pos * pos))) if pos.size else 0.0
    second = float(np.mean(x * x)) if x.size else 0.0
    if second <= 0.0 or sr <= 0.0:
        nan = float("nan")
        return AGGDFit(nan, sl, sr, nan, nan, nan)
    gamma = sl / sr
    r_hat = float(np.mean(np.abs(x))) ** 2 / second
    big_r = r_hat * (gamma**3 + 1) * (gamma + 1) / (gamma**2 + 1) ** 2
    alpha = solve_shape(big_r)
    scale = float(np.sqrt(special.gamma(1 / alpha) / special.gamma(3 / alpha)))
    bl, br = sl * scale, sr * scale
    mean = (br - bl) * float(special.gamma(2 / alpha) / special.gamma(1 / alpha))
    return AGGDFit(alpha, sl, sr, bl, br, mean)


def ggd_fit(samples: np.ndarray) -> tuple[float, float]:
    """Fit a zero-mean generalised Gaussian: ``(alpha, sigma^2)``.

    ``alpha`` solves ``phi(alpha) = E|x|^2 / E[x^2]`` (the symmetric case of :func:`aggd_fit`).
    """
    x = np.asarray(samples, dtype=np.float64).ravel()
    second = float(np.mean(x * x)) if x.size else 0.0
    if second <= 0.0:
        return float("nan"), 0.0
    return solve_shape(float(np.mean(np.abs(x))) ** 2 / second), second


def paired_products(coeffs: np.ndarray, circular: bool = False) -> list[np.ndarray]:
    """Products of each MSCN coefficient with its neighbour: horizontal, vertical, main diagonal,
    secondary diagonal.

    :param circular: wrap around the edges (NIQE's per-patch convention, same shape as the input)
        instead of cropping to the valid overlap (BRISQUE's convention).
    """
    x = np.asarray(coeffs, dtype=np.float64)
    if circular:
        return [
            np.roll(x, 1, axis=1) * x,
            np.roll(x, 1, axis=0) * x,
            np.roll(np.roll(x, 1, axis=0), 1, axis=1) * x,
            np.roll(np.roll(x, 1, axis=0), -1, axis=1) * x,
        ]
    return [
        x[:, :-1] * x[:, 1:],
        x[:-1, :] * x[1:, :],
        x[:-1, :-1] * x[1:, 1:],
        x[1:, :-1] * x[:-1, 1:],
    ]


# Keys' cubic kernel (a = -0.75, OpenCV) sampled at the 2x-downscale phase: source position
# 2*d + 0.5, so the four taps sit at distances 1.5, 0.5, 0.5, 1.5.
_CUBIC_HALF_TAPS = np.array([-0.09375, 0.59375, 0.59375, -0.09375])


def _cubic_half_axis(a: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    n = a.shape[axis]
    base = 2 * np.arange(n_out)
    out = np.zeros_like(np.take(a, base.clip(0, n - 1), axis=axis), dtype=np.float64)
    for offset, weight in zip(range(-1, 3), _CUBIC_HALF_TAPS, strict=True):
        out += weight * np.take(a, np.clip(base + offset, 0, n - 1), axis=axis)  # edge replicated
    return out


def downscale_half_cubic(image: np.ndarray) -> np.ndarray:
    """Halve a 2-D image with OpenCV's bicubic kernel (``a = -0.75``, no antialiasing, borders
    replicated); output size ``round_half_even(H / 2), round_half_even(W / 2)`` like OpenCV."""
    img = np.asarray(image, dtype=np.float64)
    h, w = img.shape
    ho, wo = max(1, int(np.rint(h * 0.5))), max(1, int(np.rint(w * 0.5)))
    return _cubic_half_axis(_cubic_half_axis(img, wo, 1), ho, 0)


# MATLAB's imresize(x, 0.5) with its default bicubic: Keys' cubic with a = -0.5, stretched 2x
# for antialiasing (8 taps), centred on source position 2*d + 0.5 (0-based), symmetric borders.
_MATLAB_HALF_TAPS = np.array(
    [
        -0.01171875,
        -0.03515625,
        0.11328125,
        0.43359375,
        0.43359375,
        0.11328125,
        -0.03515625,
        -0.01171875,
    ]
)


def _matlab_half_axis(a: np.ndarray, axis: int) -> np.ndarray:
    n = a.shape[axis]
    n_out = int(np.ceil(n * 0.5))
    base = 2 * np.arange(n_out)
    period = 2 * n
    out = 0.0
    for offset, weight in zip(range(-3, 5), _MATLAB_HALF_TAPS, strict=True):
        idx = np.mod(base + offset, period)
        idx = np.where(idx >= n, period - 1 - idx, idx)  # mirror with the edge sample repeated
        out = out + weight * np.take(a, idx, axis=axis)
    return np.asarray(out, dtype=np.float64)


def downscale_half_matlab(image: np.ndarray) -> np.ndarray:
    """Halve a 2-D image like MATLAB's ``imresize(image, 0.5)`` (bicubic, antialiased)."""
    img = np.asarray(image, dtype=np.float64)
    return _matlab_half_axis(_matlab_half_axis(img, 0), 1)
