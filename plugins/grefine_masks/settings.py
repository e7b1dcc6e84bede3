"""Settings sections of the two mask fusers (``[plugins.mask_paper]``, ``[plugins.mask_reference]``)."""

from __future__ import annotations

from pydantic import Field

from grefine_core.config import StrictModel


class PaperMaskSettings(StrictModel):
    """``[plugins.mask_paper]``: ``Q = clip((1 - P) + A_defect, 0, 1)``, refine where ``Q > tau``.

    :ivar tau: binarisation threshold of Eq. 9 (a pixel is refined when ``Q`` is strictly above it).
    :ivar dilate_px: grow the region by this many pixels (Euclidean disk) before feathering.
    :ivar feather_sigma: Gaussian sigma (pixels) of the soft edge; 0 gives a hard mask.
    """

    tau: float = Field(0.5, ge=0.0, le=1.0)
    dilate_px: int = Field(4, ge=0, le=512)
    feather_sigma: float = Field(3.0, ge=0.0, le=256.0)


class ReferenceMaskSettings(StrictModel):
    """``[plugins.mask_reference]``: the released code's thresholds.

    Region = ``A_defect > aq_threshold`` union (only when ``use_pq``) ``P < pq_threshold``. The
    released notebook used the AQ region only (``use_pq = false``); with the alignment slot
    disabled and ``use_pq = false`` the mask is therefore empty.

    :ivar pq_threshold: PQ region threshold (released code: 100/255).
    :ivar aq_threshold: AQ region threshold (released code: 170/255).
    :ivar use_pq: add the PQ region to the mask.
    :ivar dilate_px: as for ``mask_paper``.
    :ivar feather_sigma: as for ``mask_paper``.
    """

    pq_threshold: float = Field(100 / 255, ge=0.0, le=1.0)
    aq_threshold: float = Field(170 / 255, ge=0.0, le=1.0)
    use_pq: bool = False
    dilate_px: int = Field(4, ge=0, le=512)
    feather_sigma: float = Field(3.0, ge=0.0, le=256.0)
