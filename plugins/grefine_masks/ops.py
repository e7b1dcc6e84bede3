"""Mask arithmetic shared by the fusers: region rules, dilation, feathering, the MaskResult.

Convention: a *region* is a bool ``(H, W)`` array of pixels to refine. :func:`finish_mask` turns it
into a :class:`~grefine_core.types.MaskResult` whose ``binary`` is exactly the support of ``soft``
(``soft > 0`` there and ``soft == 0`` elsewhere), so "pixels outside ``binary`` stay identical"
and "pixels where ``soft == 0`` stay identical" are the same promise to stage 1.
"""

from __future__ import annotations

import numpy as np

from grefine_core.errors import InputError
from grefine_core.types import AlignmentResult, MaskResult, PerceptualResult

#: Feather values below this (about a quarter of one 8-bit grey level) are cut to 0, so the
#: Gaussian's far tail does not make the whole image "masked".
FEATHER_FLOOR = 1.0 / 1024.0


def as_map(values: object, what: str, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Check one quality map and return it as float32 ``(H, W)``.

    :param values: the map (array-like).
    :param what: its name for error messages (e.g. ``"perceptual.map"``).
    :param shape: the expected ``(H, W)``, or ``None`` to accept any 2-D shape.
    :returns: a float32 array.
    :raises InputError: wrong dimensionality or shape, or non-finite values.
    """
    arr = np.asarray(values, dtype=np.float32)
    if arr.ndim != 2:
        raise InputError(f"{what} must be a 2-D (H, W) map, got shape {arr.shape}")
    if shape is not None and arr.shape != tuple(shape):
        raise InputError(
            f"{what} has shape {arr.shape} but the perceptual map has (H, W) = {tuple(shape)}; "
            "every map must have the input image's (H, W)"
        )
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise InputError(f"{what} contains {bad} non-finite value(s) (NaN or inf)")
    return arr


def _inputs(
    perceptual: PerceptualResult, alignment: AlignmentResult | None
) -> tuple[np.ndarray | None, np.ndarray | None, tuple[int, int]]:
    """``(P or None when neutral, A_defect or None when AQ is off, shape)``."""
    p_map = as_map(perceptual.map, "perceptual.map")
    shape = (int(p_map.shape[0]), int(p_map.shape[1]))
    a_map = None
    if alignment is not None:
        a_map = as_map(alignment.defect_map, "alignment.defect_map", shape)
    return (None if perceptual.neutral else p_map), a_map, shape


def paper_quality(
    p_map: np.ndarray | None, a_map: np.ndarray | None, shape: tuple[int, int]
) -> np.ndarray:
    """``Q = clip((1 - P) + A_defect, 0, 1)``; a missing term (PQ neutral, AQ off) counts as 0.

    :returns: float32 ``(H, W)`` in [0, 1] (high = needs refining).
    """
    q = np.zeros(shape, np.float32)
    if p_map is not None:
        q += 1.0 - p_map
    if a_map is not None:
        q += a_map
    return np.clip(q, 0.0, 1.0)


def dilate(region: np.ndarray, radius_px: int) -> np.ndarray:
    """Grow ``region`` by a Euclidean disk of ``radius_px`` pixels (0 = unchanged).

    Uses a distance transform, so the cost does not grow with the radius.
    """
    region = np.asarray(region, dtype=bool)
    if radius_px <= 0 or not region.any() or region.all():
        return region.copy()
    from scipy.ndimage import distance_transform_edt

    return distance_transform_edt(~region) <= float(radius_px)


def feather(region: np.ndarray, sigma: float) -> np.ndarray:
    """Soft edge: the region blurred by a Gaussian of ``sigma`` pixels (0 = hard 0/1 mask).

    Values under :data:`FEATHER_FLOOR` are set to 0, except inside ``region`` itself, which always
    keeps a positive weight.

    :returns: float32 ``(H, W)`` in [0, 1].
    """
    hard = np.asarray(region, dtype=np.float32)
    if sigma <= 0 or not region.any():
        return hard
    from scipy.ndimage import gaussian_filter

    soft = gaussian_filter(hard, sigma=float(sigma), mode="nearest")
    soft = np.clip(soft, 0.0, 1.0).astype(np.float32)
    keep = (soft >= FEATHER_FLOOR) | np.asarray(region, dtype=bool)
    return np.where(keep, np.maximum(soft, FEATHER_FLOOR * hard), 0.0).astype(np.float32)


def finish_mask(region: np.ndarray, dilate_px: int, feather_sigma: float) -> MaskResult:
    """Dilate, feather and package a region.

    :param region: bool ``(H, W)``, the pixels to refine.
    :param dilate_px: dilation radius in pixels.
    :param feather_sigma: Gaussian sigma of the soft edge in pixels.
    :returns: the :class:`MaskResult`; ``binary`` is the support of ``soft``.
    """
    soft = feather(dilate(region, dilate_px), feather_sigma)
    binary = soft > 0.0
    fraction = float(binary.mean()) if binary.size else 0.0
    return MaskResult(soft=soft, binary=binary, fraction=fraction)


def fuse_paper(
    perceptual: PerceptualResult,
    alignment: AlignmentResult | None,
    tau: float = 0.5,
    dilate_px: int = 4,
    feather_sigma: float = 3.0,
) -> MaskResult:
    """The paper's fuser (Eq. 9): refine where ``clip((1 - P) + A_defect, 0, 1) > tau``.

    :param perceptual: the PQ result; when ``neutral`` (PQ disabled) its term is 0.
    :param alignment: the AQ result, or ``None`` (AQ disabled: no alignment term).
    :param tau: binarisation threshold.
    :param dilate_px: dilation radius in pixels.
    :param feather_sigma: feather sigma in pixels.
    :returns: the fused :class:`MaskResult`.
    """
    p_map, a_map, shape = _inputs(perceptual, alignment)
    region = paper_quality(p_map, a_map, shape) > tau
    return finish_mask(region, dilate_px, feather_sigma)


def fuse_reference(
    perceptual: PerceptualResult,
    alignment: AlignmentResult | None,
    pq_threshold: float = 100 / 255,
    aq_threshold: float = 170 / 255,
    use_pq: bool = False,
    dilate_px: int = 4,
    feather_sigma: float = 3.0,
) -> MaskResult:
    """The released code's fuser: ``A_defect > aq_threshold`` union (if ``use_pq``) ``P < pq_threshold``.

    :param perceptual: the PQ result; a neutral one (``P = 1``) adds nothing.
    :param alignment: the AQ result, or ``None`` (no AQ region).
    :param pq_threshold: PQ threshold (100/255 in the released code).
    :param aq_threshold: AQ threshold (170/255 in the released code).
    :param use_pq: include the PQ region (the released notebook did not).
    :param dilate_px: dilation radius in pixels.
    :param feather_sigma: feather sigma in pixels.
    :returns: the fused :class:`MaskResult`.
    """
    p_map, a_map, shape = _inputs(perceptual, alignment)
    region = np.zeros(shape, bool)
    if use_pq and p_map is not None:
        region |= p_map < pq_threshold
    if a_map is not None:
        region |= a_map > aq_threshold
    return finish_mask(region, dilate_px, feather_sigma)
