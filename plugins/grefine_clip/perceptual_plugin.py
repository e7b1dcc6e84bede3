"""Plugin ``clip_pq``: the perceptual-map slot (PQ-Map, docs/indicators.md) on the CLIP Surgery backbone.

Settings: ``[plugins.clip]`` (shared with ``clip_aq``) and ``[plugins.pq]``. Importing this module
does not import torch.
"""

from __future__ import annotations

from typing import Any

from grefine_clip.settings import ClipSettings, PQSettings
from grefine_core.markers import hookimpl


@hookimpl
def grefine_settings_models() -> dict[str, type]:
    return {"clip": ClipSettings, "pq": PQSettings}


@hookimpl
def grefine_perceptual_map(image: Any, context: Any) -> Any:
    """``P`` (H, W) and ``p`` for ``image``; its CLIP tokens stay in ``context.cache`` for AQ."""
    from grefine_clip.runtime import get_clip, get_pq, image_tokens

    clip = get_clip(context)
    pq = get_pq(context)
    result = pq(image, tokens=image_tokens(context, clip, image))
    notes = getattr(clip, "notes", None)
    if notes is not None:  # the oracle says what it found and what it proves
        result.info.update(notes(image))
    return result
