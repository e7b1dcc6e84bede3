"""Stage 1: SDXL inpainting inside the fused mask, cropped to the mask where it is small.

:func:`refine_stage1` is the whole stage without the plugin plumbing, so tests and benchmarks can
call it with any pipeline; the plugin module only supplies settings, the cached pipeline, the
seeded generator and the progress callback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from grefine_core.errors import InputError
from grefine_core.placement import model_placement
from grefine_core.types import AlignmentResult, MaskResult, PerceptualResult, StageOutput
from grefine_sdxl import geometry
from grefine_sdxl.emphasis import display_prompt, prompt_window
from grefine_sdxl.prompt_weights import WeightedFragment, weight_report, weighted_fragments
from grefine_sdxl.settings import SDXLSettings
from grefine_sdxl.strength import (
    MIN_STRENGTH,
    combined_quality,
    scheduled_steps,
    stage1_strength,
)

Progress = Callable[[int, int], None]
log = logging.getLogger("grefine.sdxl")


def check_mask(mask: MaskResult, height: int, width: int) -> np.ndarray:
    """The blend weights: ``mask.soft`` (float32 ``(H, W)`` in [0, 1]) zeroed outside
    ``mask.binary``, after checking both match the image.

    :raises InputError: wrong shape, non-finite values or values outside [0, 1].
    """
    soft = np.asarray(mask.soft, dtype=np.float32)
    if soft.shape != (height, width):
        raise InputError(
            f"stage1 'sdxl': mask.soft has shape {soft.shape} but the image is (H, W) = "
            f"{(height, width)}; the fuser must return a mask of the input's (H, W)"
        )
    if not np.isfinite(soft).all():
        raise InputError("stage1 'sdxl': mask.soft contains NaN or infinite values")
    if soft.size and (soft.min() < -1e-6 or soft.max() > 1 + 1e-6):
        raise InputError(
            f"stage1 'sdxl': mask.soft must lie in [0, 1], got [{soft.min():.3g}, {soft.max():.3g}]"
        )
    binary = np.asarray(mask.binary, dtype=bool)
    if binary.shape != soft.shape:
        raise InputError(
            f"stage1 'sdxl': mask.binary has shape {binary.shape} but mask.soft has {soft.shape}"
        )
    # Both promises hold whatever the fuser did: nothing changes where soft == 0 or outside binary.
    return np.where(binary, np.clip(soft, 0.0, 1.0), np.float32(0.0)).astype(np.float32)


def conditioning_text(
    prompt: str, alignment: AlignmentResult | None, settings: SDXLSettings
) -> list[WeightedFragment]:
    """The weighted fragments of the stage-1 prompt.

    Every mode reads the user's own weight markup (``prompt_weights``, A1111 syntax by default)
    and encodes the plain text. ``weight`` multiplies the defective spans of
    ``alignment.emphasis`` in; ``suffix`` appends ``prompt_suffix`` (the released code); ``none``
    adds nothing.
    """
    spans = []
    if settings.emphasis == "weight" and alignment is not None:
        spans = list(alignment.emphasis)
    fragments = weighted_fragments(prompt, spans, settings.prompt_weights)
    if settings.emphasis == "suffix":
        fragments = [*fragments, WeightedFragment(settings.prompt_suffix, 1.0)]
    return fragments


def _skip(image: Image.Image, reason: str, **info: Any) -> StageOutput:
    return StageOutput(image=image.copy(), info={"skipped": True, "reason": reason, **info})


def refine_stage1(
    image: Image.Image,
    mask: MaskResult,
    perceptual: PerceptualResult,
    alignment: AlignmentResult | None,
    prompt: str,
    settings: SDXLSettings,
    get_pipeline: Callable[[], Any],
    generator: Any,
    seed: int | None = None,
    progress: Progress | None = None,
    model_note: str | None = None,
) -> StageOutput:
    """Inpaint ``image`` inside ``mask`` with the pipeline ``get_pipeline()`` returns.

    Output pixels: ``input * (1 - soft) + refined * soft``; wherever ``soft == 0`` (outside
    ``mask.binary``) they are the input's, bit for bit.

    :param image: the input (any PIL mode; RGB is used).
    :param mask: the fused mask, ``(H, W)`` of the image.
    :param perceptual: the PQ result (``p``; ignored for strength when ``neutral``).
    :param alignment: the AQ result or ``None`` (``a`` and the emphasis spans).
    :param prompt: the prompt.
    :param settings: the ``[plugins.sdxl]`` section.
    :param get_pipeline: returns the inpainting pipeline (called only if something is to be done).
    :param generator: a seeded ``torch.Generator`` for the sampling noise.
    :param seed: the generator's seed, for the report.
    :param progress: ``progress(step, total)`` after each denoising step.
    :param model_note: extra text for the report (e.g. the tiny model's disclaimer).
    :returns: the :class:`StageOutput` (image of the input size, and what was done in ``info``).
    """
    rgb = image.convert("RGB") if image.mode != "RGB" else image
    soft = check_mask(mask, rgb.height, rgb.width)
    binary = soft > 0
    base = {"seed": seed, "model": settings.model}
    if not binary.any():
        return _skip(rgb, "empty mask: nothing to refine", **base)

    q = combined_quality(
        None if perceptual.neutral else perceptual.score,
        None if alignment is None else alignment.score,
    )
    strength = stage1_strength(
        q, settings.strength_mode, settings.strength_min, settings.strength_max, settings.strength
    )
    base.update(quality=q, strength=strength, strength_mode=settings.strength_mode)
    if strength < MIN_STRENGTH:
        return _skip(rgb, f"strength {strength:.4g} < {MIN_STRENGTH}: nothing to do", **base)

    fragments = conditioning_text(prompt, alignment, settings)
    pairs = [(f.text, f.weight) for f in fragments]
    pipe = get_pipeline()
    from grefine_sdxl.loading import native_size, size_multiple

    base.update(model_placement(pipe))
    text = "".join(t for t, _ in pairs)
    n_tokens, kept = prompt_window(pipe, text)
    base.update(prompt_tokens=n_tokens, prompt_truncated=kept is not None)
    if kept is not None:
        log.warning(
            "stage 1 'sdxl': the prompt has %d CLIP tokens but SDXL's text encoders read 75 "
            "(plus start and end), so it is cut after %r (the same in every emphasis mode)",
            n_tokens,
            kept[-60:],
        )
        base["prompt_kept"] = kept

    native = settings.native_size or native_size(pipe)
    path, regions, labels = stage1_regions(binary, settings, native, size_multiple(pipe))
    n_sched, n_run = scheduled_steps(settings.steps, strength)
    total = n_run * len(regions)
    import torch

    result = np.asarray(rgb, dtype=np.uint8).copy()
    conditioning: dict[tuple[tuple[str, float], ...], dict[str, Any]] = {}
    reports: list[dict[str, Any]] = []
    for index, region in enumerate(regions):
        x0, y0, x1, y1 = region.box
        own = np.isin(labels, region.components)
        region_soft = np.where(own[y0:y1, x0:x1], soft[y0:y1, x0:x1], np.float32(0.0))
        region_pairs = pairs
        if settings.region_emphasis and len(regions) > 1:
            region_pairs = [
                (f.text, f.weight)
                for f in conditioning_text(prompt, _covering(alignment, own), settings)
            ]
        key = tuple(region_pairs)
        if key not in conditioning:  # one encoding per distinct weighted prompt
            conditioning[key] = _conditioning_kwargs(
                pipe, region_pairs, settings, embed=len(regions) > 1
            )
        region_gen = generator
        region_seed = None
        if seed is not None and len(regions) > 1:
            region_seed = geometry.region_seed(seed, region.box)
            region_gen = torch.Generator("cpu").manual_seed(region_seed)
        refined = _inpaint(
            pipe,
            rgb.crop(region.box),
            region_soft,
            region.working_size,
            strength,
            n_sched,
            settings.guidance_scale,
            region_gen,
            conditioning[key],
            lambda step, done=index * n_run: progress(done + step, total) if progress else None,
        )
        result[y0:y1, x0:x1] = geometry.composite(result[y0:y1, x0:x1], refined, region_soft)
        reports.append(
            {
                "box": list(region.box),
                "working_size": list(region.working_size),
                "steps_run": n_run,
                "seed": region_seed if region_seed is not None else seed,
                "emphasised_prompt": display_prompt(region_pairs),
                "mask_fraction": float(own.mean()),
            }
        )
    boxes = [r.box for r in regions]
    union = (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )
    info = {
        **base,
        "skipped": False,
        "path": path,
        "crop_box": list(union),
        "working_size": list(regions[0].working_size),
        "regions": reports,
        "steps": settings.steps,
        "steps_scheduled": n_sched,
        "steps_run": n_run,
        "guidance_scale": settings.guidance_scale,
        "emphasis": settings.emphasis,
        "emphasised_prompt": display_prompt(pairs),
        "weights": weight_report(fragments),
        "conditioning": "pipeline"
        if all(c.get("encoded") == "pipeline" or "prompt" in c for c in conditioning.values())
        else "compel",
        "mask_fraction": float(binary.mean()),
    }
    if model_note:
        info["note"] = model_note
    return StageOutput(image=Image.fromarray(result, "RGB"), info=info)


def stage1_regions(
    binary: np.ndarray, settings: SDXLSettings, native: int, multiple: int
) -> tuple[str, list[geometry.Region], np.ndarray]:
    """``(path, regions, component labels)``: ``"regions"`` (several boxes, one per group of
    blobs), ``"crop"`` (one box) or ``"full"`` (the whole image: a large mask, crop-to-mask off,
    or a box that grew to the whole image)."""
    height, width = binary.shape
    labels, count = geometry.components(binary)
    every = tuple(range(1, count + 1))
    min_side = settings.min_working_size or max(native // 2, 1)
    buckets = geometry.bucket_sizes(native, tuple(settings.size_buckets), multiple)
    pad = (settings.crop_padding, settings.crop_min_padding_px, settings.crop_max_aspect)
    full_box = (0, 0, width, height)
    if settings.crop_to_mask and float(binary.mean()) < settings.crop_max_fraction:
        if settings.per_region:
            regions = geometry.plan_regions(
                labels, count, padding=pad[0], min_padding_px=pad[1], max_aspect=pad[2],
                native=native, min_side=min_side, multiple=multiple, buckets=buckets,
            )  # fmt: skip
        else:
            box = geometry.crop_box(binary, *pad)
            assert box is not None  # the mask is not empty here
            size = geometry.region_working_size(
                (box[2] - box[0], box[3] - box[1]), native, min_side, multiple, buckets
            )
            regions = [geometry.Region(geometry.fit_aspect(box, size, width, height), size, every)]
        if not any(r.box == full_box for r in regions):
            return ("regions" if len(regions) > 1 else "crop"), regions, labels
    size = geometry.working_size((width, height), native, min_side, multiple, full=True)
    return "full", [geometry.Region(full_box, size, every)], labels


def _covering(alignment: AlignmentResult | None, own: np.ndarray) -> AlignmentResult | None:
    """``alignment`` with only the emphasis of the defects that concern the region ``own``: an
    attribute defect when its object's map reaches 0.5 inside the region, a missing object
    always (where it belongs is not known)."""
    if alignment is None or not alignment.emphasis:
        return alignment
    import dataclasses

    by_span = {tuple(p.span): p for p in alignment.phrases}
    kept = []
    for e in alignment.emphasis:
        phrase = by_span.get(tuple(e.span))
        if phrase is None or phrase.defect != "attribute":
            kept.append(e)
        elif phrase.noun_map.shape == own.shape and (phrase.noun_map[own] >= 0.5).any():
            kept.append(e)
    return dataclasses.replace(alignment, emphasis=kept)


def _inpaint(
    pipe: Any,
    region: Image.Image,
    region_soft: np.ndarray,
    size: tuple[int, int],
    strength: float,
    n_sched: int,
    guidance_scale: float,
    generator: Any,
    call: dict[str, Any],
    progress: Callable[[int], Any],
) -> np.ndarray:
    """Inpaint one region at its working ``size``; the result at the region's own size, uint8."""
    import torch

    work_w, work_h = size
    work_image = geometry.resize_rgb(region, size)
    work_soft = geometry.resize_mask(region_soft, size)
    # The model inpaints the core of the mask; the feather band only blends.
    inpaint = work_soft >= 0.5 if (work_soft >= 0.5).any() else work_soft > 0
    work_mask = Image.fromarray((inpaint * 255).astype(np.uint8), mode="L")

    def on_step_end(_pipe: Any, step: int, _t: Any, _kwargs: dict[str, Any]) -> dict[str, Any]:
        progress(step + 1)
        return {}

    kwargs = {k: v for k, v in call.items() if k != "encoded"}
    with torch.no_grad():
        out = pipe(
            image=work_image,
            mask_image=work_mask,
            height=work_h,
            width=work_w,
            strength=strength,
            num_inference_steps=n_sched,
            guidance_scale=guidance_scale,
            generator=generator,
            output_type="np",
            callback_on_step_end=on_step_end,
            **kwargs,
        ).images[0]
    refined = Image.fromarray(np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8), "RGB")
    return np.asarray(geometry.resize_rgb(refined, region.size), dtype=np.uint8)


def _conditioning_kwargs(
    pipe: Any, fragments: list[tuple[str, float]], settings: SDXLSettings, embed: bool = False
) -> dict[str, Any]:
    """Prompt arguments of the pipeline call: the plain text when every weight is 1 (exactly the
    pipeline's own conditioning; ``embed``: encoded here by the pipeline's own ``encode_prompt``,
    to be reused by several regions), else compel embeddings cut at the same 77-token window."""
    if all(weight == 1.0 for _, weight in fragments):
        plain = {
            "prompt": "".join(text for text, _ in fragments),
            "negative_prompt": settings.negative_prompt or None,
        }
        if not embed:
            return plain
        import torch

        with torch.no_grad():
            pe, npe, ppe, nppe = pipe.encode_prompt(
                prompt=plain["prompt"],
                device=pipe._execution_device,
                num_images_per_prompt=1,
                do_classifier_free_guidance=settings.guidance_scale > 1.0,
                negative_prompt=plain["negative_prompt"],
            )
        return {
            "prompt_embeds": pe,
            "negative_prompt_embeds": npe,
            "pooled_prompt_embeds": ppe,
            "negative_pooled_prompt_embeds": nppe,
            "encoded": "pipeline",
        }
    from grefine_sdxl.emphasis import SDXLPromptEncoder

    return SDXLPromptEncoder(pipe).encode(fragments, settings.negative_prompt)
