"""PASD (Pixel-Aware Stable Diffusion) on diffusers: models, pipeline and the ``pasd`` plugin.

The public names are imported lazily so that ``import grefine_pasd`` does not import torch::

    from grefine_pasd import PASDUNet2DConditionModel, load_pasd_controlnet, PASDPipeline
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "PASDControlNetModel",
    "PASDPipeline",
    "PASDPipelineOutput",
    "PASDUNet2DConditionModel",
    "load_pasd_controlnet",
]

_LAZY = {
    "PASDUNet2DConditionModel": "grefine_pasd.unet",
    "PASDControlNetModel": "grefine_pasd.controlnet",
    "load_pasd_controlnet": "grefine_pasd.controlnet",
    "PASDPipeline": "grefine_pasd.pipeline",
    "PASDPipelineOutput": "grefine_pasd.pipeline",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'grefine_pasd' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
