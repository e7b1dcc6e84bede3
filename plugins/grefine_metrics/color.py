"""sRGB to CIE-L*a*b* (D65), in numpy.

sRGB is linearised with the IEC 61966-2-1 curve, mapped to XYZ with the sRGB primaries' matrix,
normalised by the D65 white (0.95047, 1, 1.08883) and passed through the CIE ``f`` function with its
linear segment below ``(6/29)^3``.
"""

from __future__ import annotations

import numpy as np

_SRGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
D65_WHITE = np.array([0.95047, 1.0, 1.08883])
_DELTA = 6.0 / 29.0


def srgb_to_linear(rgb01: np.ndarray) -> np.ndarray:
    """Undo the sRGB transfer curve; input and output in [0, 1]."""
    c = np.asarray(rgb01, dtype=np.float64)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _f(t: np.ndarray) -> np.ndarray:
    return np.where(t > _DELTA**3, np.cbrt(t), t / (3 * _DELTA**2) + 4.0 / 29.0)


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """Convert ``(..., 3)`` sRGB values in [0, 255] to CIE-Lab (D65, 2 degree observer).

    :returns: ``(..., 3)`` float64: L* in [0, 100], a* and b* roughly in [-128, 127].
    """
    arr = np.asarray(rgb, dtype=np.float64)
    if arr.shape[-1] != 3:
        raise ValueError(f"srgb_to_lab expects a last axis of 3 channels, got shape {arr.shape}")
    xyz = srgb_to_linear(arr / 255.0) @ _SRGB_TO_XYZ.T
    fx, fy, fz = np.moveaxis(_f(xyz / D65_WHITE), -1, 0)
    return np.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)
