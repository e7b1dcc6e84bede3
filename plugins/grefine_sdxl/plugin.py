"""Plugin ``sdxl``: stage-1 refinement by SDXL inpainting inside the fused mask (docs/refiners.md)."""

from __future__ import annotations

from typing import Any

from grefine_core.markers import hookimpl
from grefine_sdxl.settings import TINY_MODEL, SDXLSettings

SECTION = "sdxl"
TINY_NOTE = "tiny random-weight model: proves the plumbing, the image is not refined meaningfully"


@hookimpl
def grefine_settings_models() -> dict[str, type]:
    return {SECTION: SDXLSettings}


@hookimpl
def grefine_weights(context: Any) -> list[dict[str, Any]]:
    """The inpainting pipeline's weights (and the float16 VAE fix on a float16 run)."""
    from grefine_sdxl.weights import known_dtype, sdxl_weights

    return sdxl_weights(context.settings(SECTION), known_dtype(context))


def cached_pipeline(settings: SDXLSettings, context: Any) -> Any:
    """The pipeline for ``settings``, loaded once per :class:`GRefine` via its model cache."""
    from grefine_sdxl.loading import cache_key, load_inpaint_pipeline

    device, dtype = context.device, context.dtype
    return context.models.get_or_create(
        cache_key(settings, device, dtype),
        lambda: load_inpaint_pipeline(settings, device=device, dtype=dtype),
    )


@hookimpl
def grefine_refine_stage1(
    image: Any, mask: Any, perceptual: Any, alignment: Any, prompt: str, context: Any
) -> Any:
    """Inpaint inside the mask; see :func:`grefine_sdxl.refine.refine_stage1`."""
    from grefine_sdxl.refine import refine_stage1

    settings = context.settings(SECTION)
    is_tiny = settings.model.strip().lower() == TINY_MODEL
    return refine_stage1(
        image,
        mask,
        perceptual,
        alignment,
        prompt,
        settings,
        get_pipeline=lambda: cached_pipeline(settings, context),
        generator=context.torch_generator(),
        seed=int(context.seed),
        progress=context.progress,
        model_note=TINY_NOTE if is_tiny else None,
    )
