"""Stage-1 refiner: SDXL inpainting inside the fused mask (plugin ``sdxl``, :mod:`grefine_sdxl.plugin`).

Heavy libraries (torch, diffusers, transformers, compel) load only when a function needs them.
"""

from __future__ import annotations

from grefine_core.lazy import lazy_exports

_EXPORTS = {
    "SDXLSettings": "grefine_sdxl.settings",
    "stage1_strength": "grefine_sdxl.strength",
    "combined_quality": "grefine_sdxl.strength",
    "refine_stage1": "grefine_sdxl.refine",
    "load_inpaint_pipeline": "grefine_sdxl.loading",
    "build_tiny_pipeline": "grefine_sdxl.tiny",
    "SDXLPromptEncoder": "grefine_sdxl.emphasis",
    "emphasis_fragments": "grefine_sdxl.emphasis",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
