"""Small image helpers shared by the metrics: arrays, luminance, masks."""

from __future__ import annotations

import numpy as np
from PIL import Image

from grefine_core.errors import InputError


def rgb_array(image: Image.Image) -> np.ndarray:
    """``(H, W, 3)`` float64 in [0, 255] from any PIL image (converted to RGB)."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.float64)


def luminance_601(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` (same range as the input)."""
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def luminance_709(rgb: np.ndarray) -> np.ndarray:
    """Rec. 709 weights ``0.2125, 0.7154, 0.0721`` (scikit-image's ``rgb2gray``, used by BRISQUE)."""
    return rgb[..., 0] * 0.2125 + rgb[..., 1] * 0.7154 + rgb[..., 2] * 0.0721


def binary_mask(mask: np.ndarray | None, shape: tuple[int, int], name: str = "mask") -> np.ndarray:
    """A bool ``(H, W)`` mask: ``None`` gives an empty mask, floats are thresholded at 0.5.

    :raises InputError: the mask is not 2-D or does not match ``shape``.
    """
    if mask is None:
        return np.zeros(shape, dtype=bool)
    m = np.asarray(mask)
    if m.ndim != 2 or m.shape != tuple(shape):
        raise InputError(f"{name} has shape {m.shape}; expected {tuple(shape)} (H, W) of the image")
    if m.dtype == bool:
        return m
    return m.astype(np.float64) > 0.5


def same_size(before: Image.Image, after: Image.Image, what: str = "metric") -> None:
    """Raise :class:`InputError` when the two images differ in size."""
    if before.size != after.size:
        raise InputError(
            f"{what}: the original is {before.size[0]}x{before.size[1]} but the refined image is "
            f"{after.size[0]}x{after.size[1]}; full-reference metrics need equal sizes"
        )
