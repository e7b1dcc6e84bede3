"""Settings of the torch CLIP Surgery backbone (pydantic only: no torch at import time).

``[plugins.clip]`` names the CLIP of the ``clip`` backbone; the ``onnx`` backbone exports the
same model, so it reads this section too.
"""

from __future__ import annotations

from pydantic import Field

from grefine_core.config import StrictModel


class ClipSettings(StrictModel):
    """``[plugins.clip]``: which CLIP the indicators use."""

    model: str = Field(
        "ViT-B-16-quickgelu",
        description="open_clip model name, 'tiny', 'oracle' (the planted-truth backbone: proves "
        "the logic, not the quality), or a path to an OpenAI-format .pt/.safetensors "
        "file or a folder holding one",
    )
    pretrained: str = Field(
        "openai", description="open_clip pretrained tag (ignored for 'tiny', 'oracle' and paths)"
    )
    cache_dir: str = Field("", description="open_clip / Hugging Face cache folder ('' = default)")
