"""CLIP Surgery backbone and the PQ-Map / AQ-Map quality indicators of G-Refine.

The public names are imported lazily so that ``import grefine_clip`` (and the plugin modules)
do not import torch::

    from grefine_clip import SurgeryCLIP, PerceptualQuality, load_pq_prompts, AlignmentQuality
"""

from __future__ import annotations

from grefine_core.lazy import lazy_exports

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
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
