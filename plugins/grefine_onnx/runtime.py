"""Glue between the run context and the ONNX backend: one backend per configuration (exported on
first use into the cache), one image pass per image per run, shared by ``onnx_pq`` and ``onnx_aq``.

Mirrors :mod:`grefine_clip.runtime`, with :class:`~grefine_onnx.backend.OnnxSurgeryCLIP` as the
backbone of grefine_clip's own ``PerceptualQuality`` / ``AlignmentQuality``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("grefine.onnx")


def load_onnx_clip(clip_settings: Any, onnx_settings: Any, *, text_cache_size: int = 4096) -> Any:
    """Build the ONNX backend for ``[plugins.clip]`` + ``[plugins.onnx]``.

    Steps: find which providers really work (one probe session); load the torch CLIP once to
    hash its weights; reuse the cached / given export when its manifest matches, export otherwise
    (:func:`grefine_onnx.cache.ensure_export`); open the three sessions; drop the torch model.
    ``fp16`` without a usable GPU provider falls back to the float32 export with a warning.

    :param clip_settings: a :class:`grefine_clip.settings.ClipSettings`.
    :param onnx_settings: an :class:`grefine_onnx.settings.OnnxSettings`.
    :returns: an :class:`~grefine_onnx.backend.OnnxSurgeryCLIP`.
    """
    import onnxruntime as ort
    from grefine_clip.model import SurgeryCLIP

    from grefine_onnx.backend import OnnxSurgeryCLIP
    from grefine_onnx.cache import ensure_export
    from grefine_onnx.export import ExportOptions
    from grefine_onnx.providers import SessionConfig, probe_providers

    s = onnx_settings
    base = SessionConfig.from_settings(s)
    working = probe_providers(base)
    on_gpu = any(p in ("tensorrt", "cuda") for p in working)
    fp16 = bool(s.fp16)
    if fp16 and not on_gpu:
        log.warning(
            "onnx: fp16 was requested but no GPU provider is usable (running on %s); using the "
            "float32 export",
            ", ".join(working),
        )
        fp16 = False
    options = ExportOptions(
        opset=s.opset,
        fp16=fp16,
        static=s.static,
        static_image_batch=s.static_image_batch,
        static_text_batch=s.static_text_batch,
    )
    torch_clip = SurgeryCLIP.from_pretrained(
        clip_settings.model, clip_settings.pretrained, cache_dir=clip_settings.cache_dir or None
    )
    folder, manifest = ensure_export(
        torch_clip,
        options,
        directory=s.model_dir or None,
        cache_dir=s.cache_dir or None,
        model_name=clip_settings.model,
        on_mismatch=s.on_mismatch,
        source={"model": clip_settings.model, "pretrained": clip_settings.pretrained},
    )
    del torch_clip
    trt_dir = s.trt_engine_cache_dir or str(Path(folder) / "trt" / f"ort-{ort.__version__}")
    config = dataclasses.replace(
        base,
        providers=working,
        check_driver=False,
        trt_fp16=manifest.get("dtype") == "float16",
        trt_cache_dir=trt_dir,
    )
    clip = OnnxSurgeryCLIP(folder, manifest, config, text_cache_size=text_cache_size)
    log.info("onnx: %r", clip)
    return clip


def backend_key(context: Any) -> tuple[Any, ...]:
    """The model-cache key of the backend described by ``[plugins.clip]`` + ``[plugins.onnx]``."""
    c = context.settings("clip")
    o = context.settings("onnx")
    pretrained = c.pretrained if c.model != "tiny" else ""
    return ("grefine_onnx.OnnxSurgeryCLIP", c.model, pretrained, c.cache_dir, o.model_dump_json())


def get_clip(context: Any) -> Any:
    """The shared :class:`~grefine_onnx.backend.OnnxSurgeryCLIP` (built on first use)."""
    c = context.settings("clip")
    o = context.settings("onnx")
    return context.models.get_or_create(backend_key(context), lambda: load_onnx_clip(c, o))


def image_tokens(context: Any, clip: Any, image: Any) -> Any:
    """Surgery tokens ``[1, N, D]`` of ``image`` from the ONNX image graph, once per run."""
    from grefine_clip import runtime

    return runtime.image_tokens(context, clip, image, key=backend_key(context))


def get_pq(context: Any) -> Any:
    """grefine_clip's ``PerceptualQuality`` of ``[plugins.pq]`` on the ONNX backbone."""
    from grefine_clip import runtime

    return runtime.get_pq(context, get_clip(context), backend_key(context), label="onnx_pq")


def get_aq(context: Any) -> Any:
    """grefine_clip's ``AlignmentQuality`` of ``[plugins.aq]`` on the ONNX backbone."""
    from grefine_clip import runtime

    return runtime.get_aq(context, get_clip(context), backend_key(context))
