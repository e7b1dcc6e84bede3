"""CLIP Surgery backbone and the PQ-Map / AQ-Map quality indicators of G-Refine.

The public names are imported lazily so that ``import grefine_clip`` (and the plugin modules)
do not import torch::

    from grefine_clip import SurgeryCLIP, PerceptualQuality, load_pq_prompts, AlignmentQuality
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "SurgeryCLIP": "grefine_clip.model",
    "TextFeatureCache": "grefine_clip.model",
    "prompt_templates": "grefine_clip.model",
    "PerceptualQuality": "grefine_clip.pq",
    "PQPrompts": "grefine_clip.pq",
    "load_pq_prompts": "grefine_clip.pq",
    "AlignmentQuality": "grefine_clip.aq",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'grefine_clip' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
