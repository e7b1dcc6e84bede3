"""Crop-to-mask geometry and compositing: pure numpy/PIL, no torch.

Boxes are ``(x0, y0, x1, y1)`` in input pixels, ``x1``/``y1`` exclusive. Sizes are ``(W, H)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Plan:
    """Where and at what size stage 1 inpaints.

    :ivar path: ``"crop"`` (the mask's box only) or ``"full"`` (the whole image).
    :ivar box: the region of the input that is inpainted.
    :ivar working_size: ``(W, H)`` the region is resized to for the model (multiples of ``multiple``).
    """

    path: str
    box: Box
    working_size: tuple[int, int]


def round_to_multiple(value: float, multiple: int) -> int:
    """Nearest positive multiple of ``multiple`` (at least ``multiple``)."""
    return max(int(multiple), int(round(value / multiple)) * int(multiple))


def mask_bbox(binary: np.ndarray) -> Box | None:
    """Bounding box of the ``True`` pixels, or ``None`` when there are none."""
    rows = np.flatnonzero(binary.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(binary.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _grow_axis(lo: int, hi: int, target: int, limit: int) -> tuple[int, int]:
    """Widen ``[lo, hi)`` to ``target`` pixels around its centre, shifted to fit ``[0, limit)``."""
    target = min(max(target, hi - lo), limit)
    extra = target - (hi - lo)
    lo -= extra // 2
    hi += extra - extra // 2
    if lo < 0:
        hi, lo = hi - lo, 0
    if hi > limit:
        lo, hi = max(lo - (hi - limit), 0), limit
    return lo, hi


def crop_box(
    binary: np.ndarray, padding: float = 0.25, min_padding_px: int = 16, max_aspect: float = 4.0
) -> Box | None:
    """The mask's bounding box plus context, clamped to the image.

    :param binary: bool ``(H, W)`` mask.
    :param padding: context added on every side, as a fraction of the box's longer side.
    :param min_padding_px: at least this much context on every side.
    :param max_aspect: the box is widened (within the image) until long/short <= this, so thin
        masks still give the model a usable canvas.
    :returns: the box, or ``None`` for an empty mask.
    """
    bbox = mask_bbox(binary)
    if bbox is None:
        return None
    height, width = binary.shape
    x0, y0, x1, y1 = bbox
    pad = max(int(math.ceil(padding * max(x1 - x0, y1 - y0))), int(min_padding_px))
    x0, y0, x1, y1 = max(x0 - pad, 0), max(y0 - pad, 0), min(x1 + pad, width), min(y1 + pad, height)
    long_side = max(x1 - x0, y1 - y0)
    short_min = int(math.ceil(long_side / max_aspect))
    x0, x1 = _grow_axis(x0, x1, short_min, width)
    y0, y1 = _grow_axis(y0, y1, short_min, height)
    return x0, y0, x1, y1


def working_size(
    box_size: tuple[int, int], native: int, min_side: int, multiple: int, full: bool
) -> tuple[int, int]:
    """The ``(W, H)`` a region of ``box_size`` is resized to for the model.

    The aspect ratio is kept. ``full``: the longer side goes to ``native`` (docs/refiners.md). Crop: the
    longer side keeps its own length, clamped to ``[min_side, native]``: large crops keep the
    model's native resolution, small ones are not upscaled beyond ``min_side``.
    Both sides are rounded to multiples of ``multiple``.
    """
    w, h = box_size
    long_side = max(w, h)
    target = native if full else min(max(long_side, min_side), native)
    scale = target / long_side
    return round_to_multiple(w * scale, multiple), round_to_multiple(h * scale, multiple)


def plan_region(
    binary: np.ndarray,
    fraction: float,
    *,
    crop_to_mask: bool,
    crop_max_fraction: float,
    padding: float,
    min_padding_px: int,
    max_aspect: float,
    native: int,
    min_side: int,
    multiple: int,
) -> Plan:
    """Choose the crop or the full-image path and the working size (see :func:`crop_box`)."""
    height, width = binary.shape
    full_box: Box = (0, 0, width, height)
    box = None
    if crop_to_mask and fraction < crop_max_fraction:
        box = crop_box(binary, padding, min_padding_px, max_aspect)
    if box is None or box == full_box:
        return Plan(
            "full", full_box, working_size((width, height), native, min_side, multiple, True)
        )
    size = (box[2] - box[0], box[3] - box[1])
    return Plan("crop", box, working_size(size, native, min_side, multiple, False))


def composite(original: np.ndarray, refined: np.ndarray, soft: np.ndarray) -> np.ndarray:
    """``original * (1 - soft) + refined * soft``, rounded to uint8; exactly ``original`` where
    ``soft == 0``.

    :param original: uint8 ``(h, w, 3)``.
    :param refined: uint8 or float ``(h, w, 3)`` in 0..255.
    :param soft: float ``(h, w)`` in [0, 1].
    :returns: uint8 ``(h, w, 3)``.
    """
    weight = soft.astype(np.float32)[..., None]
    mixed = original.astype(np.float32) * (1.0 - weight) + refined.astype(np.float32) * weight
    mixed = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    return np.where(weight > 0, mixed, original)


def resize_rgb(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize an RGB image to ``(W, H)`` (bicubic; no-op when the size already matches)."""
    if image.size == tuple(size):
        return image
    return image.resize(tuple(size), Image.Resampling.BICUBIC)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a float ``(h, w)`` mask to ``(W, H)`` (bilinear), float32 in [0, 1]."""
    if (mask.shape[1], mask.shape[0]) == tuple(size):
        return mask.astype(np.float32)
    img = Image.fromarray(mask.astype(np.float32), mode="F")
    out = np.asarray(img.resize(tuple(size), Image.Resampling.BILINEAR), dtype=np.float32)
    return np.clip(out, 0.0, 1.0)
