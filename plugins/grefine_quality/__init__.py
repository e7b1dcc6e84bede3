"""grefine_quality: the PQ-Map and AQ-Map quality indicators of G-Refine (docs/indicators.md), on
any CLIP-shaped backbone (:class:`grefine_core.ClipBackbone`). The math exists here once; the
backbones (``clip``: torch, ``oracle``: planted truth, ``onnx``: ONNX Runtime, or a third-party
one) are found by name through the ``grefine_backbones`` hook and never imported from here.

The public names are imported lazily, so that ``import grefine_quality`` does not import torch::

    from grefine_quality import PerceptualQuality, AlignmentQuality, load_pq_prompts, TextEnsemble
"""

from __future__ import annotations

from grefine_core.lazy import lazy_exports

_EXPORTS = {
    "PerceptualQuality": "grefine_quality.pq",
    "PQPrompts": "grefine_quality.pq",
    "load_pq_prompts": "grefine_quality.pq",
    "AlignmentQuality": "grefine_quality.aq",
    "TextEnsemble": "grefine_quality.ensemble",
    "TextFeatureCache": "grefine_quality.ensemble",
    "prompt_templates": "grefine_quality.ensemble",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
