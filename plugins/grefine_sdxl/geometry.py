"""Crop-to-mask geometry and compositing: pure numpy/PIL, no torch.

Boxes are ``(x0, y0, x1, y1)`` in input pixels, ``x1``/``y1`` exclusive. Sizes are ``(W, H)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

Box = tuple[int, int, int, int]


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
    return padded_box(bbox, height, width, padding, min_padding_px, max_aspect)


def padded_box(
    bbox: Box, height: int, width: int, padding: float, min_padding_px: int, max_aspect: float
) -> Box:
    """``bbox`` plus context, clamped to the ``(height, width)`` image (see :func:`crop_box`)."""
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


# --------------------------------------------------------------------------- per-region stage 1


#: More components than this (speckle) are inpainted as one box over all of them.
MAX_REGIONS = 32


@dataclass(frozen=True)
class Region:
    """One part of the mask that stage 1 inpaints on its own.

    :ivar box: the inpainted box of the input (the components' padded box, grown to the working
        size's aspect ratio where the image allows).
    :ivar working_size: ``(W, H)`` the box is resized to for the model (a bucket size).
    :ivar components: labels (1-based, of :func:`components`) of the mask blobs it covers.
    """

    box: Box
    working_size: tuple[int, int]
    components: tuple[int, ...]


def components(binary: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components of the mask (8-connectivity): ``(labels (H, W) int32, count)``."""
    from scipy import ndimage

    labels, count = ndimage.label(binary, structure=np.ones((3, 3), bool))
    return labels.astype(np.int32), int(count)


def bucket_sizes(native: int, fractions: tuple[float, ...], multiple: int) -> list[int]:
    """The side lengths working sizes snap to: ``fractions`` of ``native`` as multiples of
    ``multiple`` (e.g. 512, 768, 1024 for SDXL), so that compiled or captured graphs are reused
    across images and regions. Empty ``fractions``: no snapping."""
    return sorted({round_to_multiple(native * f, multiple) for f in fractions if f > 0})


def snap(value: int, buckets: list[int]) -> int:
    """The smallest bucket at or above ``value`` (the largest when none is)."""
    return next((b for b in buckets if b >= value), buckets[-1]) if buckets else value


def region_working_size(
    box_size: tuple[int, int], native: int, min_side: int, multiple: int, buckets: list[int]
) -> tuple[int, int]:
    """:func:`working_size` of a crop, then each side snapped up to a bucket."""
    w, h = working_size(box_size, native, min_side, multiple, full=False)
    return (snap(w, buckets), snap(h, buckets)) if buckets else (w, h)


def fit_aspect(box: Box, size: tuple[int, int], width: int, height: int) -> Box:
    """``box`` grown (never shrunk, within the image) towards the aspect ratio of ``size``, so
    that resizing it to ``size`` distorts as little as the image allows."""
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    ww, wh = size
    if bw * wh < bh * ww:  # too narrow: widen
        x0, x1 = _grow_axis(x0, x1, int(math.ceil(bh * ww / wh)), width)
    elif bw * wh > bh * ww:  # too flat: heighten
        y0, y1 = _grow_axis(y0, y1, int(math.ceil(bw * wh / ww)), height)
    return x0, y0, x1, y1


def _union(a: Box, b: Box) -> Box:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def plan_regions(
    labels: np.ndarray,
    count: int,
    *,
    padding: float,
    min_padding_px: int,
    max_aspect: float,
    native: int,
    min_side: int,
    multiple: int,
    buckets: list[int],
) -> list[Region]:
    """The regions stage 1 inpaints one by one (docs/refiners.md, "Per-region stage 1").

    :param labels: :func:`components` of the binary mask, and ``count`` of them.

    Each connected component starts as a region with its padded box (:func:`crop_box`). Two
    regions merge when their boxes overlap (their context would be inpainted twice) or when the
    union costs no more than the two apart, the cost of a box being the pixels of its working
    size (what the UNet processes per step). Merging repeats until no pair qualifies; a union
    that would be inpainted at a lower resolution than its parts (an image larger than the
    model's native size) never counts as cheaper. Regions are
    returned in reading order of their boxes, so their order (and the seeds derived from their
    boxes) does not depend on how the components were labelled.
    """
    from scipy import ndimage

    height, width = labels.shape
    regions: list[tuple[Box, tuple[int, ...]]] = []
    for label, found in enumerate(ndimage.find_objects(labels, max_label=count), start=1):
        if found is None:
            continue
        ys, xs = found
        bbox = (xs.start, ys.start, xs.stop, ys.stop)
        box = padded_box(bbox, height, width, padding, min_padding_px, max_aspect)
        regions.append((box, (label,)))
    if len(regions) > MAX_REGIONS:  # speckle: one box over all (merging pairs is quadratic)
        box = (min(r[0][0] for r in regions), min(r[0][1] for r in regions),
               max(r[0][2] for r in regions), max(r[0][3] for r in regions))  # fmt: skip
        regions = [(box, tuple(range(1, count + 1)))]

    def size(box: Box) -> tuple[int, int]:
        if box == (0, 0, width, height):  # the whole image takes the full path: native size
            return working_size((width, height), native, min_side, multiple, full=True)
        return region_working_size(
            (box[2] - box[0], box[3] - box[1]), native, min_side, multiple, buckets
        )

    def cost(box: Box) -> int:
        w, h = size(box)
        return w * h

    def scale(box: Box) -> float:
        return max(size(box)) / max(box[2] - box[0], box[3] - box[1])

    def cheaper_together(a: Box, b: Box, union: Box) -> bool:
        # Fewer pixels, but not by downscaling the union more than its parts (upscaling small
        # crops to min_side is for the model, not for detail).
        fine = min(scale(union), 1.0) >= 0.99 * min(scale(a), scale(b), 1.0)
        return fine and cost(union) <= cost(a) + cost(b)

    merged = True
    while merged and len(regions) > 1:
        merged = False
        for i in range(len(regions)):
            for j in range(i + 1, len(regions)):
                (a, la), (b, lb) = regions[i], regions[j]
                union = _union(a, b)
                if _overlap(a, b) or cheaper_together(a, b, union):
                    regions[i] = (union, tuple(sorted(la + lb)))
                    del regions[j]
                    merged = True
                    break
            if merged:
                break
    out = []
    for box, labels_in in regions:
        out.append(Region(fit_aspect(box, size(box), width, height), size(box), labels_in))
    return sorted(out, key=lambda r: (r.box[1], r.box[0], r.box[3], r.box[2]))


def region_seed(seed: int, box: Box) -> int:
    """The seed of one region: the item's seed and the region's box, hashed (so it does not
    depend on the order regions are listed or found in)."""
    import hashlib

    digest = hashlib.sha256(f"{int(seed)}:{box[0]},{box[1]},{box[2]},{box[3]}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)
