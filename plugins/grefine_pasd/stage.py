"""The stage-2 refinement itself: settings -> working size -> PASDPipeline -> input size."""

from __future__ import annotations

import math
from typing import Any

from grefine_core.placement import model_placement, run_dtype
from grefine_core.types import StageOutput
from grefine_pasd.settings import SECTION, PasdSettings

VAE_FACTOR = 8


def working_size(
    width: int, height: int, process_size: int, multiple: int = VAE_FACTOR
) -> tuple[int, int]:
    """The size PASD runs at: short side raised to ``process_size`` when smaller (aspect kept),
    then both sides floored to a multiple of ``multiple`` (at least ``multiple``).

    :returns: ``(width, height)``.
    """
    scale = max(1.0, process_size / min(width, height))
    w = max(multiple, int(math.floor(width * scale + 1e-6)) // multiple * multiple)
    h = max(multiple, int(math.floor(height * scale + 1e-6)) // multiple * multiple)
    return w, h


def _build_pipeline(settings: PasdSettings, device: str, dtype: str) -> Any:
    from grefine_pasd.loading import load_pasd_pipeline

    if settings.is_tiny:
        import torch

        from grefine_pasd.tiny import tiny_pasd_pipeline

        # The tiny models follow the run's dtype too, so the tiny preset exercises fp16 on a GPU.
        return tiny_pasd_pipeline().to(device, getattr(torch, run_dtype(device, dtype, "pasd")))

    pipe = load_pasd_pipeline(
        settings.sd_model,
        settings.pasd_checkpoint,
        device=device,
        dtype=dtype,
        local_files_only=settings.local_files_only,
        cpu_offload=settings.cpu_offload,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def refine_stage2(image: Any, prompt: str, context: Any) -> StageOutput:
    """Run PASD on ``image`` with the ``pasd`` settings of ``context``.

    :param image: the stage-1 output (PIL, any mode and size).
    :param prompt: the run's prompt (used when ``use_prompt``).
    :param context: the :class:`~grefine_core.context.RunContext`.
    :returns: a :class:`~grefine_core.types.StageOutput` of the input's size.
    """
    from PIL import Image

    from grefine_pasd.prompts import assemble_prompt, load_captioner

    settings: PasdSettings = context.settings(SECTION)
    source = image.convert("RGB")
    width, height = source.size
    steps_run = settings.steps_to_run()
    info: dict[str, Any] = {
        "strength": settings.strength,
        "steps": settings.steps,
        "steps_run": steps_run,
        "seed": context.seed,
        "guidance_scale": settings.guidance_scale,
        "conditioning_scale": settings.conditioning_scale,
        "added_noise_level": settings.added_noise_level if steps_run == settings.steps else None,
        "color_fix": settings.color_fix,
        "sd_model": settings.sd_model,
        "pasd_checkpoint": settings.pasd_checkpoint,
        "plumbing_only": settings.is_tiny,
    }
    if steps_run == 0:
        info["skipped"] = "int(steps * strength) == 0: input returned unchanged"
        return StageOutput(image=source.copy(), info=info)

    captioner = load_captioner(settings.captioner)  # a bad setting fails before any model loads
    key = (
        "pasd",
        settings.sd_model,
        settings.pasd_checkpoint,
        settings.cpu_offload,
        context.device,
        context.dtype,
    )
    pipe = context.models.get_or_create(
        key, lambda: _build_pipeline(settings, context.device, context.dtype)
    )
    info.update(model_placement(pipe))
    work_w, work_h = working_size(width, height, settings.process_size)
    work = (
        source
        if (work_w, work_h) == (width, height)
        else source.resize((work_w, work_h), Image.Resampling.BICUBIC)
    )
    caption = captioner(work) if captioner is not None else None
    full_prompt = assemble_prompt(
        prompt if settings.use_prompt else "", settings.added_prompt, caption
    )

    def on_step(_pipe: Any, step: int, _t: Any, _tensors: dict[str, Any]) -> dict[str, Any]:
        context.progress(step + 1, steps_run)
        return {}

    out = pipe(
        prompt=full_prompt,
        image=work,
        num_inference_steps=settings.steps,
        guidance_scale=settings.guidance_scale,
        negative_prompt=settings.negative_prompt,
        conditioning_scale=settings.conditioning_scale,
        generator=context.torch_generator(),
        output_type="pil",
        latent_tiled_size=settings.latent_tiled_size,
        latent_tiled_overlap=settings.latent_tiled_overlap,
        added_noise_level=settings.added_noise_level,
        added_noise_mode=settings.added_noise_mode,
        strength=settings.strength,
        color_fix=settings.color_fix,
        callback_on_step_end=on_step,
    )
    result = out.images[0]
    if result.size != (width, height):
        result = result.resize((width, height), Image.Resampling.BICUBIC)
    info.update(
        {
            "steps_run": out.steps_run,
            "timesteps": out.timesteps,
            "tiled": out.tiled,
            "prompt": full_prompt,
            "negative_prompt": settings.negative_prompt,
            "caption": caption,
            "working_size": [work_w, work_h],
        }
    )
    return StageOutput(image=result, info=info)
