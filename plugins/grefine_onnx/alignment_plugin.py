"""Plugin ``onnx_aq``: the alignment-map slot (AQ-Map) with the CLIP Surgery encoders in ONNX
Runtime. Select it with ``select.alignment = "onnx_aq"``.

Settings: ``[plugins.clip]`` and ``[plugins.aq]`` (grefine_clip's own models, shared with
``clip_aq``) and ``[plugins.onnx]``. Importing this module does not import torch or onnxruntime.
"""

from __future__ import annotations

from typing import Any

from grefine_clip.settings import AQSettings, ClipSettings

from grefine_core.markers import hookimpl
from grefine_onnx.settings import OnnxSettings


@hookimpl
def grefine_settings_models() -> dict[str, type]:
    return {"clip": ClipSettings, "aq": AQSettings, "onnx": OnnxSettings}


@hookimpl
def grefine_alignment_map(image: Any, parsed: Any, context: Any) -> Any:
    """``A_defect`` (H, W), ``a`` and the per-phrase results; reuses ``onnx_pq``'s image tokens."""
    from grefine_onnx.runtime import get_aq, get_clip, image_tokens

    clip = get_clip(context)
    aq = get_aq(context)
    return aq(image, parsed, tokens=image_tokens(context, clip, image))
