"""ONNX-exported, TensorRT-friendly CLIP Surgery encoders for the PQ / AQ indicators.

Plugin ``onnx`` (:mod:`grefine_onnx.plugin`) offers the ``onnx`` backbone to the quality
indicators (``select perceptual = "onnx_pq"``, ``alignment = "onnx_aq"``, or
``[plugins.backbone] name = "onnx"``) and the ``grefine export-onnx`` command
(:mod:`grefine_onnx.cli`). This API is imported lazily, so that ``import grefine_onnx`` loads
neither torch nor onnxruntime::

    from grefine_onnx import export_clip, ExportOptions, ensure_export, OnnxSurgeryCLIP
"""

from __future__ import annotations

from grefine_core.lazy import lazy_exports

_EXPORTS = {
    "ExportOptions": "grefine_onnx.export",
    "export_clip": "grefine_onnx.export",
    "ensure_export": "grefine_onnx.cache",
    "default_cache_dir": "grefine_onnx.cache",
    "check_export": "grefine_onnx.manifest",
    "read_manifest": "grefine_onnx.manifest",
    "OnnxSurgeryCLIP": "grefine_onnx.backend",
    "SessionConfig": "grefine_onnx.providers",
    "create_session": "grefine_onnx.providers",
    "probe_providers": "grefine_onnx.providers",
    "load_onnx_clip": "grefine_onnx.runtime",
    "OnnxSettings": "grefine_onnx.settings",
    "clip_weights_sha256": "grefine_onnx.hashing",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
