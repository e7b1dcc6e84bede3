"""Plugins ``clip_pq`` and ``onnx_pq``: the perceptual-map slot (PQ-Map, docs/indicators.md).

One indicator, two defaults for the backbone: ``clip_pq`` runs on the ``clip`` backbone (torch),
``onnx_pq`` on ``onnx`` (ONNX Runtime); ``[plugins.backbone] name`` overrides either. Settings:
``[plugins.pq]`` and ``[plugins.backbone]``. Importing this module does not import torch.
"""

from __future__ import annotations

from typing import Any

from grefine_core.markers import hookimpl
from grefine_quality.settings import BackboneSettings, PQSettings


class PerceptualIndicator:
    """The PQ-Map plugin on the backbone ``backbone`` (unless the configuration names another).

    :param name: the plugin's name, used in log messages.
    """

    def __init__(self, name: str, backbone: str):
        self.name = name
        self.backbone = backbone

    @hookimpl
    def grefine_settings_models(self) -> dict[str, type]:
        return {"pq": PQSettings, "backbone": BackboneSettings}

    @hookimpl
    def grefine_perceptual_map(self, image: Any, context: Any) -> Any:
        """``P`` (H, W) and ``p`` for ``image``; its tokens stay in ``context.cache`` for AQ."""
        from grefine_quality.runtime import backbone_for, get_pq, image_tokens

        backbone = backbone_for(context, self.backbone)
        pq = get_pq(context, backbone, self.name)
        result = pq(image, tokens=image_tokens(context, backbone, image))
        notes = getattr(backbone, "notes", None)
        if notes is not None:  # e.g. the oracle says what it found and what it proves
            result.info.update(notes(image))
        return result

    @hookimpl
    def grefine_weights(self, context: Any) -> list[dict[str, Any]]:
        """The backbone's weights and the PQ prompt files (``grefine weights``)."""
        from grefine_quality.weights import indicator_weights

        return indicator_weights(context, self.backbone, perceptual=True)

    def __repr__(self) -> str:
        return f"PerceptualIndicator({self.name!r}, backbone={self.backbone!r})"
