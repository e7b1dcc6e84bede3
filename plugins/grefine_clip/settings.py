"""Settings sections of the CLIP indicator plugins (pydantic only: no torch at import time).

``[plugins.clip]`` is shared by ``clip_pq`` and ``clip_aq`` (both declare this same class), so the
two plugins load one backbone.
"""

from __future__ import annotations

from typing import Literal

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


class PQSettings(StrictModel):
    """``[plugins.pq]``: the perceptual indicator (PQ-Map)."""

    compat: Literal["paper", "reference"] = Field(
        "paper",
        description="'paper': per-token normalisation and the paper's cask bounds; 'reference': "
        "the released PQ-Map.py (token-axis normalisation, 0.935 for all three factors)",
    )
    pq_map: Literal["absolute", "minmax_cask", "minmax"] | None = Field(
        None,
        description="how P is made: 'absolute' (paper: the cask per token on the probability of "
        "'good', bicubic, on p's scale), 'minmax_cask' (ablation: the cask per pixel over four "
        "min-max maps), 'minmax' (reference: the overall min-max map); unset = by compat",
    )
    prompts: str = Field(
        "",
        description="folder of PQ-{overall,technical,rational,natural}.pth or a URL of one; '' "
        "searches $GREFINE_PQ_DIR, ~/.cache/grefine/pq_embeddings, then the shared data folder",
    )
    allow_download: bool = Field(
        False, description="download the prompt files from the authors' repository when missing"
    )
    random_fallback: bool = Field(
        False,
        description="tiny CLIP only: seeded random prompts (with a warning) when the files are "
        "nowhere; measures nothing",
    )


class AQSettings(StrictModel):
    """``[plugins.aq]``: the alignment indicator (AQ-Map)."""

    merge: Literal["paper", "union"] = Field(
        "paper", description="'paper': product of the defect maps; 'union': max (released code)"
    )
    a_bound: float = Field(0.5, ge=0.0, le=1.0, description="noun-missing threshold")
    beta: float = Field(0.5, gt=0.0, description="cask threshold of the alignment score (Eq. 8)")
    emphasis_weight: float = Field(
        0.1, ge=0.0, description="defective phrases get weight 1 + w in the stage-1 prompt"
    )
    text_cache_size: int = Field(4096, ge=0, description="LRU size of the text-feature cache")
    max_phrases: int = Field(
        32,
        ge=1,
        description="score at most this many phrases with a noun (the first ones); the rest are "
        "dropped with a warning",
    )
    compat: Literal["paper", "reference"] = Field(
        "paper",
        description="'paper': per-token image-token normalisation; 'reference': over the token "
        "axis, like the released code",
    )
