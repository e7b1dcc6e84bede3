"""Settings sections of the quality indicators (pydantic only: no torch at import time).

``[plugins.pq]`` and ``[plugins.aq]`` shape the PQ-Map and AQ-Map math; ``[plugins.backbone]``
chooses the backbone both run on (one instance, one image pass per run).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from grefine_core.config import StrictModel


class BackboneSettings(StrictModel):
    """``[plugins.backbone]``: the backbone (a :class:`grefine_core.ClipBackbone` a plugin offers
    with ``grefine_backbones``) the PQ and AQ indicators run on."""

    name: str = Field(
        "",
        description="'clip' (torch CLIP Surgery), 'onnx' (the same encoders in ONNX Runtime), "
        "'oracle' (planted truth: proves the logic, not the quality) or a third-party backbone; "
        "'' = the indicator plugin's own (clip for clip_pq/clip_aq, onnx for onnx_pq/onnx_aq)",
    )


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
        "searches $GREFINE_PQ_DIR, then ~/.cache/grefine/pq_embeddings",
    )
    allow_download: bool = Field(
        False, description="download the prompt files from the authors' repository when missing"
    )
    random_fallback: bool = Field(
        False,
        description="random-weight backbones only (tiny): seeded random prompts (with a warning) when the files are "
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
