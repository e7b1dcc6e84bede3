"""Seam strength: how much sharper the image is along the mask boundary than around it.

An inpainted region pasted back without blending leaves a step along the mask's edge. We measure
the luminance gradient magnitude ``|grad Y|`` (central differences, 8-bit levels per pixel) in two
zones defined by the distance ``d`` of each pixel to the mask boundary (on both sides):

* the *band*: ``d <= band_px`` (where a seam would be),
* the *surround*: ``band_px < d <= 4 * band_px`` (the same neighbourhood's own texture).

``seam_strength = (mean_band + 1) / (mean_surround + 1)``. 1 means the boundary is no sharper than
its surroundings (no visible seam); a hard paste gives values well above 1; the ``+1`` (one grey
level per pixel) keeps flat images finite. Lower is better. NaN when the mask is absent, empty or
full (there is no boundary).
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from grefine_metrics.imaging import binary_mask, luminance_601, rgb_array

DEFAULT_BAND_PX = 2


def boundary_distance(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of every pixel to the nearest pixel on the other side of the mask edge."""
    inside = ndimage.distance_transform_edt(mask)
    outside = ndimage.distance_transform_edt(~mask)
    return np.where(mask, inside, outside)


def gradient_magnitude(luma: np.ndarray) -> np.ndarray:
    """``sqrt(gx^2 + gy^2)`` with central differences (one-sided at the borders)."""
    gy, gx = np.gradient(luma)
    return np.hypot(gx, gy)


def seam_strength(
    image: Image.Image, mask: np.ndarray | None, band_px: int = DEFAULT_BAND_PX
) -> float:
    """Seam strength of ``image`` along the boundary of ``mask`` (see the module docstring).

    :param image: the image to inspect (the refined image, or the original for the "before" value).
    :param mask: the refinement mask ``(H, W)``; floats are thresholded at 0.5.
    :param band_px: half-width of the boundary band in pixels.
    """
    if band_px < 1:
        raise ValueError(f"band_px must be >= 1, got {band_px}")
    w, h = image.size
    m = binary_mask(mask, (h, w))
    if not m.any() or m.all():
        return float("nan")
    d = boundary_distance(m)
    band = d <= band_px
    surround = (d > band_px) & (d <= 4 * band_px)
    if not surround.any():
        surround = ~band
        if not surround.any():
            return float("nan")
    grad = gradient_magnitude(luminance_601(rgb_array(image)))
    return float((grad[band].mean() + 1.0) / (grad[surround].mean() + 1.0))
