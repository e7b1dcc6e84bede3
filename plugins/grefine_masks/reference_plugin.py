"""Plugin ``mask_reference``: the released code's thresholded regions (AQ only by default)."""

from __future__ import annotations

from typing import Any

from grefine_core.markers import hookimpl
from grefine_masks.settings import ReferenceMaskSettings

SECTION = "mask_reference"


@hookimpl
def grefine_settings_models() -> dict[str, type]:
    return {SECTION: ReferenceMaskSettings}


@hookimpl
def grefine_fuse_masks(perceptual: Any, alignment: Any, context: Any) -> Any:
    """Fuse with :func:`grefine_masks.ops.fuse_reference` and the section's settings."""
    from grefine_masks.ops import fuse_reference

    s = context.settings(SECTION)
    return fuse_reference(
        perceptual,
        alignment,
        pq_threshold=s.pq_threshold,
        aq_threshold=s.aq_threshold,
        use_pq=s.use_pq,
        dilate_px=s.dilate_px,
        feather_sigma=s.feather_sigma,
    )
