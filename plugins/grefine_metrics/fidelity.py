"""Full-reference metrics of high-quality preservation: how much of the image outside the mask
was kept (PSNR, SSIM, mean Lab colour difference), and the masked fraction.

"Outside the mask" is every pixel not in the binary mask; with no mask (``None``) the whole image
is outside. When nothing is outside (the mask covers everything) the value is NaN.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image
from scipy import ndimage

from grefine_metrics.color import srgb_to_lab
from grefine_metrics.imaging import binary_mask, rgb_array, same_size

#: SSIM constants (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03.
SSIM_SIGMA = 1.5
SSIM_RADIUS = 5
SSIM_K1, SSIM_K2 = 0.01, 0.03
DATA_RANGE = 255.0


def _outside(before: Image.Image, after: Image.Image, mask: np.ndarray | None, what: str):
    same_size(before, after, what)
    a, b = rgb_array(before), rgb_array(after)
    outside = ~binary_mask(mask, a.shape[:2])
    return a, b, outside


def psnr_outside(before: Image.Image, after: Image.Image, mask: np.ndarray | None) -> float:
    """PSNR (dB, peak 255) over all channels of the pixels outside the mask.

    :returns: ``inf`` for identical pixels, NaN when no pixel is outside the mask.
    """
    a, b, outside = _outside(before, after, mask, "psnr_outside")
    if not outside.any():
        return float("nan")
    mse = float(np.mean((a[outside] - b[outside]) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(DATA_RANGE**2 / mse)


def ssim_map(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM of two ``(H, W)`` images in [0, 255] (Gaussian window, mirrored borders)."""
    c1 = (SSIM_K1 * DATA_RANGE) ** 2
    c2 = (SSIM_K2 * DATA_RANGE) ** 2

    def blur(z: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(
            z, SSIM_SIGMA, truncate=SSIM_RADIUS / SSIM_SIGMA, mode="reflect"
        )

    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    num = (2 * mx * my + c1) * (2 * cxy + c2)
    den = (mx * mx + my * my + c1) * (vx + vy + c2)
    return num / den


def ssim_outside(before: Image.Image, after: Image.Image, mask: np.ndarray | None) -> float:
    """Mean SSIM outside the mask (SSIM map per RGB channel, averaged over channels).

    :returns: 1 for identical images, NaN when no pixel is outside the mask.
    """
    a, b, outside = _outside(before, after, mask, "ssim_outside")
    if not outside.any():
        return float("nan")
    if np.array_equal(a, b):
        return 1.0
    smap = np.mean([ssim_map(a[..., c], b[..., c]) for c in range(3)], axis=0)
    return float(np.mean(smap[outside]))


def color_shift(before: Image.Image, after: Image.Image, mask: np.ndarray | None) -> float:
    """Mean CIE76 colour difference (Euclidean distance in CIE-Lab, D65) outside the mask.

    :returns: 0 for identical images (about 1 is a just-noticeable difference), NaN when no pixel is
        outside the mask.
    """
    a, b, outside = _outside(before, after, mask, "color_shift")
    if not outside.any():
        return float("nan")
    # Only changed pixels contribute; a refiner leaves most of the outside untouched.
    changed = outside & np.any(a != b, axis=-1)
    if not changed.any():
        return 0.0
    diff = srgb_to_lab(a[changed]) - srgb_to_lab(b[changed])
    return float(np.sum(np.sqrt(np.sum(diff * diff, axis=-1))) / np.count_nonzero(outside))


def masked_fraction(after: Image.Image, mask: np.ndarray | None) -> float:
    """Fraction of pixels in the binary mask (0 without a mask)."""
    w, h = after.size
    return float(np.mean(binary_mask(mask, (h, w))))
