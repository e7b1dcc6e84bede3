"""Plugin ``onnx_pq``: the perceptual-map slot (PQ-Map) with the CLIP Surgery encoders in ONNX
Runtime. Select it with ``select.perceptual = "onnx_pq"``.

Settings: ``[plugins.clip]`` and ``[plugins.pq]`` (grefine_clip's own models, shared with
``clip_pq``) and ``[plugins.onnx]``. Importing this module does not import torch or onnxruntime.
"""

from __future__ import annotations

from typing import Any

from grefine_clip.settings import ClipSettings, PQSettings

from grefine_core.markers import hookimpl
from grefine_onnx.settings import OnnxSettings


def export_main(argv: list[str]) -> int:
    """``grefine export-onnx ...`` (imports torch and onnx only when run)."""
    from grefine_onnx.cli import main

    return int(main(argv) or 0)


@hookimpl
def grefine_register_commands() -> dict[str, tuple[str, object]]:
    return {
        "export-onnx": (
            "export CLIP Surgery encoders to ONNX (grefine export-onnx --help)",
            export_main,
        )
    }


@hookimpl
def grefine_settings_models() -> dict[str, type]:
    return {"clip": ClipSettings, "pq": PQSettings, "onnx": OnnxSettings}


@hookimpl
def grefine_perceptual_map(image: Any, context: Any) -> Any:
    """``P`` (H, W) and ``p``; the ONNX image tokens stay in ``context.cache`` for ``onnx_aq``."""
    from grefine_onnx.runtime import get_clip, get_pq, image_tokens

    clip = get_clip(context)
    pq = get_pq(context)
    return pq(image, tokens=image_tokens(context, clip, image))
