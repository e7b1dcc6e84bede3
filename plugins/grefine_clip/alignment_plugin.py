"""Plugin ``clip_aq``: the alignment-map slot (AQ-Map, docs/indicators.md) on the CLIP Surgery backbone.

Settings: ``[plugins.clip]`` (shared with ``clip_pq``) and ``[plugins.aq]``. Importing this module
does not import torch.
"""

from __future__ import annotations

from typing import Any

from grefine_clip.settings import AQSettings, ClipSettings
from grefine_core.markers import hookimpl


@hookimpl
def grefine_settings_models() -> dict[str, type]:
    return {"clip": ClipSettings, "aq": AQSettings}


@hookimpl
def grefine_alignment_map(image: Any, parsed: Any, context: Any) -> Any:
    """``A_defect`` (H, W), ``a`` and the per-phrase results; reuses PQ's image tokens."""
    from grefine_clip.runtime import get_aq, get_clip, image_tokens

    clip = get_clip(context)
    aq = get_aq(context)
    return aq(image, parsed, tokens=image_tokens(context, clip, image))
