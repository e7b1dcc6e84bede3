"""The torch backbones' factories (``grefine_backbones``): one instance per configuration, kept
in the pipeline's model cache under every setting that shapes it."""

from __future__ import annotations

import logging
from typing import Any

from grefine_core.placement import run_dtype

log = logging.getLogger("grefine.clip")

#: ``[plugins.clip] model`` naming the planted-truth backbone (:mod:`grefine_clip.oracle`): the
#: same as ``[plugins.backbone] name = "oracle"``.
ORACLE_MODEL = "oracle"


def device_dtype(context: Any) -> tuple[str, str]:
    """The device and dtype to run on: the context's, except float16 on the CPU (slow and
    partly unsupported there), which falls back to float32 with a warning (once per process),
    and ``dtype = "auto"``, which keeps CLIP in float32 (0.6 GB; its scores decide what is
    refined and are tested in float32) while the diffusion models run in float16."""
    device = str(getattr(context, "device", "cpu") or "cpu")
    config = getattr(context, "config", None)
    if getattr(config, "dtype", None) == "auto":
        return device, "float32"
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
    """The ``clip`` backbone: the :class:`~grefine_clip.model.SurgeryCLIP` of ``[plugins.clip]``
    (built on first use); ``model = "oracle"`` gives the planted-truth backbone."""
    s = context.settings("clip")
    if s.model == ORACLE_MODEL:
        return get_oracle(context)
    device, dtype = device_dtype(context)

    def build() -> Any:
        from grefine_clip.model import SurgeryCLIP

        clip = SurgeryCLIP.from_pretrained(s.model, s.pretrained, cache_dir=s.cache_dir or None)
        return clip.to(device, dtype)

    return context.models.get_or_create(clip_key(context), build)


def get_oracle(context: Any) -> Any:
    """The ``oracle`` backbone (:class:`~grefine_clip.oracle.OracleCLIP`), one per device."""
    device, _ = device_dtype(context)

    def build() -> Any:
        from grefine_clip.oracle import OracleCLIP

        return OracleCLIP().to(device)

    return context.models.get_or_create(("grefine_clip.OracleCLIP", device), build)


def _weights(context: Any) -> list[dict[str, Any]]:
    from grefine_clip.weights import clip_weights

    return clip_weights(context)


# What each backbone loads, for ``grefine weights`` (the indicators that use it report it).
get_clip.weights = _weights  # type: ignore[attr-defined]
get_oracle.weights = lambda context: []  # type: ignore[attr-defined]
# The oracle brings its own PQ prompts (no prompt files needed).
get_clip.plants_pq_prompts = lambda context: context.settings("clip").model == ORACLE_MODEL  # type: ignore[attr-defined]
get_oracle.plants_pq_prompts = lambda context: True  # type: ignore[attr-defined]
