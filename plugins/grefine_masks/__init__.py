"""Mask fusers: turn the perceptual map P and the alignment defect map A_defect into the stage-1 mask.

Two plugins: ``mask_paper`` (paper Eq. 9, :mod:`grefine_masks.paper_plugin`) and ``mask_reference``
(the released code's thresholds, :mod:`grefine_masks.reference_plugin`). The arithmetic they share
lives in :mod:`grefine_masks.ops`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PaperMaskSettings", "ReferenceMaskSettings", "fuse_paper", "fuse_reference"]


def __getattr__(name: str) -> Any:
    if name in ("PaperMaskSettings", "ReferenceMaskSettings"):
        from grefine_masks import settings

        return getattr(settings, name)
    if name in ("fuse_paper", "fuse_reference"):
        from grefine_masks import ops

        return getattr(ops, name)
    raise AttributeError(f"module 'grefine_masks' has no attribute {name!r}")
