"""Glue between the run context and the indicators: one backbone per configuration, one image
forward per image per run (the tokens are shared between PQ and AQ through ``context.cache``)."""

from __future__ import annotations

import logging
from typing import Any

from grefine_core.errors import MissingWeightsError
from grefine_core.placement import run_dtype

log = logging.getLogger("grefine.clip")

#: ``[plugins.clip] model`` of the planted-truth backbone (:mod:`grefine_clip.oracle`).
ORACLE_MODEL = "oracle"
#: ``context.cache`` key of ``{clip_key: (image, tokens)}``.
TOKENS_CACHE_KEY = "grefine_clip.image_tokens"


def device_dtype(context: Any) -> tuple[str, str]:
    """The device and dtype to run on: the context's, except float16 on the CPU (slow and
    partly unsupported there), which falls back to float32 with a warning (once per process)."""
    device = str(getattr(context, "device", "cpu") or "cpu")
    dtype = str(getattr(context, "dtype", "float32") or "float32")
    # Asked on every run (model-cache key), hence one warning per process.
    return device, run_dtype(device, dtype, "clip", warn_once=True)


def clip_key(context: Any) -> tuple[Any, ...]:
    """The model-cache key of the backbone described by ``[plugins.clip]`` and the device."""
    s = context.settings("clip")
    device, dtype = device_dtype(context)
    pretrained = s.pretrained if s.model not in ("tiny", ORACLE_MODEL) else ""
    return ("grefine_clip.SurgeryCLIP", s.model, pretrained, s.cache_dir, device, dtype)


def get_clip(context: Any) -> Any:
    """The shared :class:`~grefine_clip.model.SurgeryCLIP` (built on first use)."""
    from grefine_clip.model import SurgeryCLIP

    s = context.settings("clip")
    device, dtype = device_dtype(context)

    def build() -> Any:
        if s.model == ORACLE_MODEL:
            from grefine_clip.oracle import OracleCLIP

            return OracleCLIP().to(device)
        clip = SurgeryCLIP.from_pretrained(s.model, s.pretrained, cache_dir=s.cache_dir or None)
        return clip.to(device, dtype)

    return context.models.get_or_create(clip_key(context), build)


def image_tokens(context: Any, clip: Any, image: Any, key: Any = None) -> Any:
    """Raw surgery tokens ``[1, N, D]`` of ``image``, encoded once per run and backbone.

    :param key: the backbone's model-cache key (default: the torch backbone of ``[plugins.clip]``;
        the ONNX backend passes its own, so torch and ONNX tokens never mix).
    """
    store = context.cache.setdefault(TOKENS_CACHE_KEY, {})
    key = clip_key(context) if key is None else key
    hit = store.get(key)
    if hit is not None and hit[0] is image:
        return hit[1]
    tokens = clip.encode_image(clip.preprocess(image))
    store[key] = (image, tokens)
    return tokens


def get_pq(context: Any, clip: Any = None, key: Any = None, label: str = "clip_pq") -> Any:
    """The :class:`~grefine_clip.pq.PerceptualQuality` of ``[plugins.pq]`` (built once).

    :param clip: the backbone (default: :func:`get_clip`); the ONNX backend passes its own.
    :param key: the backbone's model-cache key (default: :func:`clip_key`).
    :param label: the plugin name used in log messages.
    """
    from grefine_clip.pq import PerceptualQuality, PQPrompts, load_pq_prompts

    s = context.settings("pq")
    model_name = context.settings("clip").model
    key = (
        "grefine_clip.PerceptualQuality",
        clip_key(context) if key is None else key,
        s.compat,
        s.pq_map,
        s.prompts,
        s.allow_download,
        s.random_fallback,
    )

    # Outside the factory: the model cache's lock is not re-entrant.
    clip = get_clip(context) if clip is None else clip

    def build() -> PerceptualQuality:
        planted = getattr(clip, "planted_pq_prompts", None)
        if planted is not None:  # the oracle: one planted good/bad pair, no files
            return PerceptualQuality(clip, planted(), compat=s.compat, pq_map=s.pq_map)
        try:
            prompts = load_pq_prompts(s.prompts or None, allow_download=s.allow_download)
        except MissingWeightsError as e:
            if not (s.random_fallback and model_name == "tiny"):
                raise
            log.warning(
                "%s: %s -- using seeded random prompt embeddings (tiny preset): the PQ "
                "score and map measure nothing",
                label,
                e,
            )
            prompts = PQPrompts.random(clip.text_width, seed=0)
        return PerceptualQuality(clip, prompts, compat=s.compat, pq_map=s.pq_map)

    return context.models.get_or_create(key, build)


def get_aq(context: Any, clip: Any = None, key: Any = None) -> Any:
    """The :class:`~grefine_clip.aq.AlignmentQuality` of ``[plugins.aq]`` (built once).

    :param clip: the backbone (default: :func:`get_clip`); :param key: its model-cache key.
    """
    from grefine_clip.aq import AlignmentQuality

    s = context.settings("aq")
    key = (
        "grefine_clip.AlignmentQuality",
        clip_key(context) if key is None else key,
        s.merge,
        s.a_bound,
        s.beta,
        s.emphasis_weight,
        s.compat,
        s.text_cache_size,
        s.max_phrases,
    )

    clip = get_clip(context) if clip is None else clip

    def build() -> AlignmentQuality:
        return AlignmentQuality(
            clip,
            merge=s.merge,
            a_bound=s.a_bound,
            beta=s.beta,
            emphasis_weight=s.emphasis_weight,
            compat=s.compat,
            text_cache_size=s.text_cache_size,
            max_phrases=s.max_phrases,
        )

    return context.models.get_or_create(key, build)
