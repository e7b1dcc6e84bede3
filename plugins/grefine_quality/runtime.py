"""Glue between the run context and the indicators: the backbone named by the configuration,
one image pass per image per run (the tokens are shared between PQ and AQ through
``context.cache``), one PQ / AQ instance per backbone and settings."""

from __future__ import annotations

import logging
from typing import Any

from grefine_core.backbone import ClipBackbone
from grefine_core.errors import MissingWeightsError

log = logging.getLogger("grefine.quality")

#: ``context.cache`` key of ``{id(backbone): (backbone, image, tokens)}``.
TOKENS_CACHE_KEY = "grefine_quality.image_tokens"


def backbone_for(context: Any, default: str) -> ClipBackbone:
    """The backbone of ``[plugins.backbone] name``, else the plugin's ``default``."""
    return context.backbone(context.settings("backbone").name or default)


def image_tokens(context: Any, backbone: ClipBackbone, image: Any) -> Any:
    """Surgery tokens ``[1, N, D]`` of ``image``, encoded once per run and backbone."""
    store = context.cache.setdefault(TOKENS_CACHE_KEY, {})
    hit = store.get(id(backbone))
    if hit is not None and hit[0] is backbone and hit[1] is image:
        return hit[2]
    tokens = backbone.encode_image(backbone.preprocess(image))
    store[id(backbone)] = (backbone, image, tokens)
    return tokens


def get_pq(context: Any, backbone: ClipBackbone, label: str) -> Any:
    """The :class:`~grefine_quality.pq.PerceptualQuality` of ``[plugins.pq]`` on ``backbone``
    (built once per backbone and settings; the model cache keeps the backbone alive).

    :param label: the plugin name used in log messages.
    """
    from grefine_quality.constants import PQ_FACTORS
    from grefine_quality.pq import PerceptualQuality, PQPrompts, load_pq_prompts

    s = context.settings("pq")
    key = ("grefine_quality.PerceptualQuality", id(backbone), s.model_dump_json())

    def build() -> PerceptualQuality:
        planted = getattr(backbone, "planted_pq_prompts", None)
        if planted is not None:  # the oracle: one planted good/bad pair, no files
            files = {f: "<planted by the backbone>" for f in PQ_FACTORS}
            prompts = PQPrompts(embeddings=planted(), files=files)
            return PerceptualQuality(backbone, prompts, compat=s.compat, pq_map=s.pq_map)
        try:
            prompts = load_pq_prompts(s.prompts or None, allow_download=s.allow_download)
        except MissingWeightsError as e:
            if not (s.random_fallback and getattr(backbone, "random_weights", False)):
                raise
            log.warning(
                "%s: %s -- using seeded random prompt embeddings (random-weight backbone): the "
                "PQ score and map measure nothing",
                label,
                e,
            )
            prompts = PQPrompts.random(backbone.text_width, seed=0)
        return PerceptualQuality(backbone, prompts, compat=s.compat, pq_map=s.pq_map)

    return context.models.get_or_create(key, build)


def get_aq(context: Any, backbone: ClipBackbone) -> Any:
    """The :class:`~grefine_quality.aq.AlignmentQuality` of ``[plugins.aq]`` on ``backbone``."""
    from grefine_quality.aq import AlignmentQuality

    s = context.settings("aq")
    key = ("grefine_quality.AlignmentQuality", id(backbone), s.model_dump_json())

    def build() -> AlignmentQuality:
        return AlignmentQuality(
            backbone,
            merge=s.merge,
            a_bound=s.a_bound,
            beta=s.beta,
            emphasis_weight=s.emphasis_weight,
            compat=s.compat,
            text_cache_size=s.text_cache_size,
            max_phrases=s.max_phrases,
        )

    return context.models.get_or_create(key, build)
