"""Plugins ``clip_aq`` and ``onnx_aq``: the alignment-map slot (AQ-Map, docs/indicators.md).

One indicator, two defaults for the backbone: ``clip_aq`` runs on the ``clip`` backbone (torch),
``onnx_aq`` on ``onnx`` (ONNX Runtime); ``[plugins.backbone] name`` overrides either. It reuses
the image tokens the perceptual plugin encoded on the same backbone. Settings: ``[plugins.aq]``
and ``[plugins.backbone]``. Importing this module does not import torch.
"""

from __future__ import annotations

from typing import Any

from grefine_core.markers import hookimpl
from grefine_quality.settings import AQSettings, BackboneSettings


class AlignmentIndicator:
    """The AQ-Map plugin on the backbone ``backbone`` (unless the configuration names another)."""

    def __init__(self, name: str, backbone: str):
        self.name = name
        self.backbone = backbone

    @hookimpl
    def grefine_settings_models(self) -> dict[str, type]:
        return {"aq": AQSettings, "backbone": BackboneSettings}

    @hookimpl
    def grefine_alignment_map(self, image: Any, parsed: Any, context: Any) -> Any:
        """``A_defect`` (H, W), ``a`` and the per-phrase results; reuses PQ's image tokens."""
        from grefine_quality.runtime import backbone_for, get_aq, image_tokens

        backbone = backbone_for(context, self.backbone)
        aq = get_aq(context, backbone)
        return aq(image, parsed, tokens=image_tokens(context, backbone, image))

    @hookimpl
    def grefine_weights(self, context: Any) -> list[dict[str, Any]]:
        """The backbone's weights (``grefine weights``)."""
        from grefine_quality.weights import indicator_weights

        return indicator_weights(context, self.backbone, perceptual=False)

    def __repr__(self) -> str:
        return f"AlignmentIndicator({self.name!r}, backbone={self.backbone!r})"
