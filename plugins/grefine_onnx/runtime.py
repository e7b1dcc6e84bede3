"""The ``onnx`` backbone's factory (``grefine_backbones``): one ONNX backend per configuration,
exported on first use into the cache from the torch ``clip`` backbone, which it finds through
the plugin host like any other backbone (it never imports the torch plugin).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("grefine.onnx")


def torch_backbone(clip_settings: Any, backbones: dict[str, Any] | None = None) -> Any:
    """A fresh ``clip`` backbone (the torch CLIP Surgery model of ``clip_settings``, float32 on
    the CPU, in a model cache of its own so it is dropped after use): the source of an export.

    :param backbones: the ``{name: factory}`` of a pipeline (default: a plugin host's).
    :raises ConfigError: no plugin offers ``clip``, or its backbone cannot be exported.
    """
    from grefine_core.config import GRefineConfig
    from grefine_core.context import ModelCache, RunContext
    from grefine_core.errors import ConfigError

    if backbones is None:
        from grefine_core.plugins import PluginHost

        backbones = PluginHost().backbones()
    context = RunContext(
        config=GRefineConfig(),
        models=ModelCache(),
        plugin_settings={"clip": clip_settings},
        backbones=dict(backbones),
    )
    backbone = context.backbone("clip")
    if not hasattr(backbone, "onnx_graphs"):
        raise ConfigError(
            f"the 'clip' backbone for [plugins.clip] model = {clip_settings.model!r} "
            f"({backbone.description}) has no ONNX export: the planted-truth backbone, not a "
            "CLIP, has no weights and no ONNX backend; use it with clip_pq/clip_aq "
            "(--preset oracle)"
        )
    return backbone


def load_onnx_clip(
    clip_settings: Any, onnx_settings: Any, *, backbones: dict[str, Any] | None = None
) -> Any:
    """Build the ONNX backend for ``[plugins.clip]`` + ``[plugins.onnx]``.

    Steps: find which providers really work (one probe session); load the torch CLIP once
    (:func:`torch_backbone`) to hash its weights; reuse the cached / given export when its manifest matches, export otherwise
    (:func:`grefine_onnx.cache.ensure_export`); open the three sessions; drop the torch model.
    ``fp16`` without a usable GPU provider falls back to the float32 export with a warning.

    :param clip_settings: the ``[plugins.clip]`` settings (model, pretrained, cache_dir).
    :param onnx_settings: an :class:`grefine_onnx.settings.OnnxSettings`.
    :param backbones: where to find the ``clip`` backbone (default: a plugin host's).
    :returns: an :class:`~grefine_onnx.backend.OnnxSurgeryCLIP`.
    """
    from grefine_onnx.backend import OnnxSurgeryCLIP
    from grefine_onnx.cache import ensure_export
    from grefine_onnx.export import ExportOptions
    from grefine_onnx.providers import (
        SessionConfig,
        import_onnx,
        import_onnxruntime,
        probe_providers,
    )

    ort = import_onnxruntime()  # both before the torch model loads: a missing extra fails fast
    import_onnx()

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
    torch_clip = torch_backbone(clip_settings, backbones)
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
    clip = OnnxSurgeryCLIP(folder, manifest, config)
    log.info("onnx: %r", clip)
    return clip


def backend_key(context: Any) -> tuple[Any, ...]:
    """The model-cache key of the backend described by ``[plugins.clip]`` + ``[plugins.onnx]``."""
    c = context.settings("clip")
    o = context.settings("onnx")
    pretrained = c.pretrained if c.model != "tiny" else ""
    return ("grefine_onnx.OnnxSurgeryCLIP", c.model, pretrained, c.cache_dir, o.model_dump_json())


def get_onnx(context: Any) -> Any:
    """The ``onnx`` backbone: the :class:`~grefine_onnx.backend.OnnxSurgeryCLIP` of
    ``[plugins.clip]`` + ``[plugins.onnx]`` (built on first use)."""
    c = context.settings("clip")
    o = context.settings("onnx")

    def build() -> Any:
        return load_onnx_clip(c, o, backbones=context.backbones)

    return context.models.get_or_create(backend_key(context), build)


def _weights(context: Any) -> list[dict[str, Any]]:
    """ONNX Runtime, and the torch ``clip`` backbone's weights (the graphs are exported from it)."""
    from grefine_quality.extras import package_entry

    hint = 'pip install "grefine[onnx]" (CUDA/TensorRT: "grefine[onnx-gpu]"; never both)'
    torch_factory = context.backbones.get("clip")
    listed = getattr(torch_factory, "weights", None)
    exported_from = list(listed(context)) if listed is not None else []
    return [
        package_entry("ONNX Runtime", "onnxruntime", hint),
        package_entry("onnx (exports the graphs)", "onnx", hint),
        *exported_from,
    ]


# What the backbone loads, for ``grefine weights`` (the indicators that use it report it).
get_onnx.weights = _weights  # type: ignore[attr-defined]
