"""Mask fusers: turn the perceptual map P and the alignment defect map A_defect into the stage-1 mask.

Two plugins: ``mask_paper`` (paper Eq. 9, :mod:`grefine_masks.paper_plugin`) and ``mask_reference``
(the released code's thresholds, :mod:`grefine_masks.reference_plugin`). The arithmetic they share
lives in :mod:`grefine_masks.ops`.
"""

from __future__ import annotations

from grefine_core.lazy import lazy_exports

_EXPORTS = {
    "PaperMaskSettings": "grefine_masks.settings",
    "ReferenceMaskSettings": "grefine_masks.settings",
    "fuse_paper": "grefine_masks.ops",
    "fuse_reference": "grefine_masks.ops",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
