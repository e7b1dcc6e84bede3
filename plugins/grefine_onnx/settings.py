"""``[plugins.onnx]``: where the ONNX exports live and how ONNX Runtime runs them.

Pydantic only (no torch, no onnxruntime at import time). The model to export comes from
``[plugins.clip]`` (the torch backbone's section); ``[plugins.pq]`` / ``[plugins.aq]`` belong to
the quality indicators, whichever backbone they run on.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from grefine_core.config import StrictModel

#: Provider short names, in the default order of preference.
PROVIDER_CHOICES: tuple[str, ...] = ("tensorrt", "cuda", "cpu")


class OnnxSettings(StrictModel):
    """``[plugins.onnx]``: ONNX export cache and ONNX Runtime session options."""

    cache_dir: str = Field(
        "",
        description="export cache folder ('' = $GREFINE_ONNX_CACHE, else ~/.cache/grefine/onnx); "
        "one sub-folder per (weights hash, export options)",
    )
    model_dir: str = Field(
        "",
        description="use this folder written by `grefine export-onnx --out DIR` instead of the "
        "cache; its manifest must match the [plugins.clip] weights",
    )
    on_mismatch: Literal["reexport", "refuse"] = Field(
        "reexport",
        description="a stale or foreign export (hash mismatch): re-export it, or refuse with an error",
    )
    providers: list[str] = Field(
        default_factory=lambda: list(PROVIDER_CHOICES),
        description="execution providers in order of preference: tensorrt, cuda, cpu; the "
        "unavailable ones are dropped with a warning and cpu is always the last resort",
    )
    fp16: bool = Field(False, description="export and run in float16 (GPU providers only)")
    static: bool = Field(
        False, description="static shapes (fixed batch, text length = context length) for TensorRT"
    )
    static_image_batch: int = Field(1, ge=1, description="image batch of a static export")
    static_text_batch: int = Field(64, ge=1, description="text batch of a static export")
    opset: int = Field(17, ge=17, le=23, description="ONNX opset of the export")
    device_id: int = Field(0, ge=0, description="GPU index for the CUDA / TensorRT providers")
    io_binding: Literal["auto", "on", "off"] = Field(
        "auto", description="bind inputs/outputs to device memory ('auto': only on a GPU provider)"
    )
    cuda_tf32: bool = Field(
        False,
        description="let the CUDA provider use TF32 for float32 MatMul/Conv (faster on Ampere and "
        "newer GPUs, ~1e-3 away from torch's float32 results); no effect on float16 exports",
    )
    intra_op_threads: int = Field(0, ge=0, description="CPU threads per operator (0 = ORT default)")
    inter_op_threads: int = Field(0, ge=0, description="CPU threads across operators (0 = default)")
    allow_spinning: bool = Field(
        True, description="let idle CPU threads spin (faster; turn off on shared machines)"
    )
    graph_optimization: Literal["disable", "basic", "extended", "all"] = Field(
        "all", description="ONNX Runtime graph optimisation level"
    )
    trt_engine_cache: bool = Field(True, description="cache built TensorRT engines on disk")
    trt_engine_cache_dir: str = Field(
        "", description="TensorRT engine/timing cache folder ('' = inside the export folder)"
    )
    trt_max_workspace_gb: float = Field(4.0, gt=0, description="TensorRT builder workspace")
    trt_max_image_batch: int = Field(16, ge=1, description="TensorRT profile: largest image batch")
    trt_max_text_batch: int = Field(256, ge=1, description="TensorRT profile: largest text batch")

    @field_validator("providers")
    @classmethod
    def _known_providers(cls, value: list[str]) -> list[str]:
        names = [str(v).strip().lower() for v in value]
        unknown = [v for v in names if v not in PROVIDER_CHOICES]
        if unknown:
            raise ValueError(f"unknown provider(s) {unknown}; valid: {', '.join(PROVIDER_CHOICES)}")
        if not names:
            raise ValueError(f"give at least one provider ({', '.join(PROVIDER_CHOICES)})")
        return list(dict.fromkeys(names))
