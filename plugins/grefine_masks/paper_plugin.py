"""Plugin ``mask_paper``: the paper's mask fuser, ``M = Bi(1 - P + A_defect)`` (Eq. 9)."""

from __future__ import annotations

from typing import Any

from grefine_core.markers import hookimpl
from grefine_masks.settings import PaperMaskSettings

SECTION = "mask_paper"


@hookimpl
def grefine_settings_models() -> dict[str, type]:
    return {SECTION: PaperMaskSettings}


@hookimpl
def grefine_fuse_masks(perceptual: Any, alignment: Any, context: Any) -> Any:
    """Fuse P and A_defect with :func:`grefine_masks.ops.fuse_paper` and the section's settings."""
    from grefine_masks.ops import fuse_paper

    s = context.settings(SECTION)
    return fuse_paper(
        perceptual, alignment, tau=s.tau, dilate_px=s.dilate_px, feather_sigma=s.feather_sigma
    )
