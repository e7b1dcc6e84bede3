"""PASD (Pixel-Aware Stable Diffusion) on diffusers: models, pipeline and the ``pasd`` plugin.

The public names are imported lazily so that ``import grefine_pasd`` does not import torch::

    from grefine_pasd import PASDUNet2DConditionModel, load_pasd_controlnet, PASDPipeline
"""

from __future__ import annotations

from grefine_core.lazy import lazy_exports

_EXPORTS = {
    "PASDUNet2DConditionModel": "grefine_pasd.unet",
    "PASDControlNetModel": "grefine_pasd.controlnet",
    "load_pasd_controlnet": "grefine_pasd.controlnet",
    "PASDPipeline": "grefine_pasd.pipeline",
    "PASDPipelineOutput": "grefine_pasd.pipeline",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
