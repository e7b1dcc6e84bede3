"""Stage-1 refiner ``example_sharpen``: unsharp mask inside the fused mask, feathered blend outside.

Select it with ``grefine refine ... --select stage1=example_sharpen``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from grefine_core import MaskResult, StageOutput, StrictModel, hookimpl


class SharpenSettings(StrictModel):
    """``[plugins.example_sharpen]``: the unsharp-mask parameters."""

    radius: float = 2.0
    percent: int = 150


@hookimpl
def grefine_settings_models() -> dict[str, type]:
    return {"example_sharpen": SharpenSettings}


@hookimpl
def grefine_refine_stage1(image: Image.Image, mask: MaskResult, context: Any) -> StageOutput:
    settings = context.settings("example_sharpen")
    sharp = image.filter(ImageFilter.UnsharpMask(radius=settings.radius, percent=settings.percent))
    soft = mask.soft[..., None].astype(np.float32)
    out = np.asarray(image, np.float32) * (1 - soft) + np.asarray(sharp, np.float32) * soft
    context.progress(1, 1)
    return StageOutput(
        Image.fromarray(out.round().clip(0, 255).astype(np.uint8), "RGB"),
        {"radius": settings.radius, "percent": settings.percent},
    )
