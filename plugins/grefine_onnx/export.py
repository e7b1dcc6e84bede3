"""Export the CLIP Surgery encoders of the torch ``clip`` backbone to ONNX.

Three graphs (see :data:`grefine_onnx.constants.PART_FILES`), each with float32 inputs/outputs:

* ``image.onnx``: ``pixel_values [B, 3, S, S]`` -> ``tokens [B, 1 + g*g, D]``, the CLIP Surgery
  tokens (dual-path v-v attention in the last 6 blocks, class token from the original path).
* ``text.onnx``: ``token_ids [B, L]`` (int64) -> ``features [B, D]`` (not normalised; the prompt
  ensemble averages them outside the graph).
* ``prompt_text.onnx``: ``embeddings [B, eot + 1, W]`` -> ``features [B, D]``: the PQ learned
  prompt path, so any prompt files can be used with one export.

The batch axis is dynamic by default (the text length too); ``static=True`` fixes every shape
for TensorRT. ``fp16=True`` stores the weights and computes in float16 (for GPU providers).
The TorchScript-based exporter (``dynamo=False``) is used: 4x faster to export than the dynamo
exporter here, with identical outputs.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import time
import uuid
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from grefine_onnx.constants import ALL_PARTS, EXPORT_FORMAT, IO_NAMES, MANIFEST_NAME, PART_FILES
from grefine_onnx.hashing import clip_weights_sha256, file_sha256, options_key
from grefine_onnx.manifest import write_manifest

log = logging.getLogger("grefine.onnx")


@dataclass(frozen=True)
class ExportOptions:
    """What to export and how.

    :ivar opset: ONNX opset (>= 17: LayerNormalization is a single op from 17 on).
    :ivar fp16: float16 weights and compute (inputs/outputs stay float32).
    :ivar static: fixed shapes: batch = the ``static_*_batch`` values, text length = the context
        length (77). Needed for TensorRT engines without optimisation profiles.
    :ivar parts: which graphs to export.
    """

    opset: int = 17
    fp16: bool = False
    static: bool = False
    static_image_batch: int = 1
    static_text_batch: int = 64
    static_prompt_batch: int = 8
    parts: tuple[str, ...] = field(default=ALL_PARTS)

    def __post_init__(self) -> None:
        from grefine_core.errors import ConfigError

        if self.opset < 17:
            raise ConfigError(f"ONNX opset must be >= 17, got {self.opset}")
        unknown = [p for p in self.parts if p not in PART_FILES]
        if unknown or not self.parts:
            raise ConfigError(
                f"unknown ONNX graph(s) {unknown or '(none given)'}; valid: {', '.join(PART_FILES)}"
            )
        for name in ("static_image_batch", "static_text_batch", "static_prompt_batch"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def dtype(self) -> str:
        return "float16" if self.fp16 else "float32"

    def key_payload(self) -> dict[str, Any]:
        """The options that change the exported graphs (static batches only when static)."""
        out: dict[str, Any] = {
            "opset": int(self.opset),
            "dtype": self.dtype,
            "static": bool(self.static),
            "parts": sorted(self.parts),
        }
        if self.static:
            out["static_batches"] = {
                "image": int(self.static_image_batch),
                "text": int(self.static_text_batch),
                "prompt_text": int(self.static_prompt_batch),
            }
        return out


def architecture(clip: Any) -> dict[str, int]:
    """The shape facts of an exportable backbone (the torch ``clip`` backbone) that the graphs
    depend on."""
    visual = clip.visual
    return {
        "image_size": int(visual.image_size),
        "patch_size": int(visual.patch_size),
        "grid": int(visual.grid),
        "tokens": int(visual.grid) ** 2 + 1,
        "embed_dim": int(clip.embed_dim),
        "vision_width": int(visual.positional_embedding.shape[1]),
        "surgery_layers": int(visual.surgery_layers),
        "text_width": int(clip.text_width),
        "context_length": int(clip.text.context_length),
        "prompt_eot_index": int(clip.prompt_text.eot_index),
    }


def export_key(weights_sha256: str, options: ExportOptions, arch: dict[str, int]) -> str:
    """The cache key: source weights + export options + architecture + export format."""
    return options_key(
        {
            "format": EXPORT_FORMAT,
            "weights_sha256": weights_sha256,
            "options": options.key_payload(),
            "architecture": arch,
        }
    )


def io_shapes(part: str, options: ExportOptions, arch: dict[str, int]) -> dict[str, Any]:
    """Input / output names, shapes (a string for a dynamic axis) and dtypes of one graph."""
    inp, out = IO_NAMES[part]
    s = options.static
    if part == "image":
        b: Any = options.static_image_batch if s else "batch"
        size = arch["image_size"]
        return {
            "inputs": {inp: {"shape": [b, 3, size, size], "dtype": "float32"}},
            "outputs": {out: {"shape": [b, arch["tokens"], arch["embed_dim"]], "dtype": "float32"}},
        }
    if part == "text":
        b = options.static_text_batch if s else "batch"
        length: Any = arch["context_length"] if s else "length"
        return {
            "inputs": {inp: {"shape": [b, length], "dtype": "int64"}},
            "outputs": {out: {"shape": [b, arch["embed_dim"]], "dtype": "float32"}},
        }
    b = options.static_prompt_batch if s else "batch"
    rows = arch["prompt_eot_index"] + 1
    return {
        "inputs": {inp: {"shape": [b, rows, arch["text_width"]], "dtype": "float32"}},
        "outputs": {out: {"shape": [b, arch["embed_dim"]], "dtype": "float32"}},
    }


def _graph_module(clip: Any, part: str, fp16: bool) -> Any:
    """The exportable module of ``part`` (the backbone's ``onnx_graphs()``), on the CPU in the
    export dtype (a copy when the backbone's own modules are elsewhere or in another dtype, so
    the caller's model is never changed)."""
    import torch

    module = clip.onnx_graphs()[part]
    want = torch.float16 if fp16 else torch.float32
    p = next(module.parameters())
    if p.dtype != want or p.device.type != "cpu":
        module = copy.deepcopy(module).to(device="cpu", dtype=want)
    return module.eval()


def _example(clip: Any, part: str, options: ExportOptions, arch: dict[str, int]) -> Any:
    import torch

    gen = torch.Generator("cpu").manual_seed(0)
    if part == "image":
        b = options.static_image_batch if options.static else 2  # >= 2 keeps the batch dynamic
        size = arch["image_size"]
        return torch.randn((b, 3, size, size), generator=gen)
    if part == "text":
        ids = clip.tokenize(["a photo of a cat", "a dog"])
        if options.static:
            reps = -(-options.static_text_batch // ids.shape[0])
            return ids.repeat(reps, 1)[: options.static_text_batch]
        return ids
    b = options.static_prompt_batch if options.static else 2
    rows = arch["prompt_eot_index"] + 1
    return 0.02 * torch.randn((b, rows, arch["text_width"]), generator=gen)


def _dynamic_axes(part: str, options: ExportOptions) -> dict[str, dict[int, str]] | None:
    if options.static:
        return None
    inp, out = IO_NAMES[part]
    if part == "text":
        return {inp: {0: "batch", 1: "length"}, out: {0: "batch"}}
    return {inp: {0: "batch"}, out: {0: "batch"}}


def export_graph(clip: Any, part: str, path: str | Path, options: ExportOptions) -> float:
    """Export one graph of ``clip`` to ``path``; returns the seconds it took."""
    import torch

    arch = architecture(clip)
    module = _graph_module(clip, part, options.fp16)
    example = _example(clip, part, options, arch)
    inp, out = IO_NAMES[part]
    start = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter's deprecation notice and tracer warnings are expected here.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=False,
            opset_version=int(options.opset),
            input_names=[inp],
            output_names=[out],
            dynamic_axes=_dynamic_axes(part, options),
            do_constant_folding=True,
        )
    return time.perf_counter() - start


def _versions() -> dict[str, str]:
    import torch

    from grefine_core import __version__ as grefine_version
    from grefine_onnx.providers import import_onnx

    onnx = import_onnx()
    return {"grefine": grefine_version, "torch": torch.__version__, "onnx": onnx.__version__}


def export_clip(
    clip: Any,
    out_dir: str | Path,
    options: ExportOptions | None = None,
    *,
    weights_sha256: str | None = None,
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Export the graphs of ``clip`` into ``out_dir`` and write the manifest.

    Files are written into a staging folder first and moved into place one by one; the manifest
    is removed first and written last, so an interrupted export never looks valid.

    :param clip: the torch ``clip`` backbone (left unchanged; its ``onnx_graphs()`` are exported).
    :param out_dir: the folder (created if needed).
    :param options: :class:`ExportOptions` (default: fp32, dynamic batch, all graphs).
    :param weights_sha256: the source-weights hash when already known (computed otherwise).
    :param source: extra facts about the weights for the manifest (model name, tag...).
    :returns: the manifest.
    """
    from grefine_onnx.providers import import_onnx

    import_onnx()  # torch's exporter needs it: say so before any work
    opts = options or ExportOptions()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = weights_sha256 or clip_weights_sha256(clip)
    arch = architecture(clip)
    key = export_key(weights, opts, arch)
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    staging = out / f".staging-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    graphs: dict[str, Any] = {}
    total = 0.0
    try:
        for part in opts.parts:
            tmp = staging / PART_FILES[part]
            seconds = export_graph(clip, part, tmp, opts)
            total += seconds
            log.info("onnx: exported %s graph in %.1f s", part, seconds)
            graphs[part] = {
                "file": PART_FILES[part],
                "sha256": file_sha256(tmp),
                "bytes": tmp.stat().st_size,
                **io_shapes(part, opts, arch),
            }
            os.replace(tmp, out / PART_FILES[part])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    manifest = {
        "format": EXPORT_FORMAT,
        "key": key,
        "source": {
            "weights_sha256": weights,
            "description": getattr(clip, "description", ""),
            **(source or {}),
        },
        "opset": int(opts.opset),
        "dtype": opts.dtype,
        "static": bool(opts.static),
        "options": asdict(opts) | {"parts": list(opts.parts)},
        "architecture": arch,
        "graphs": graphs,
        "versions": _versions(),
        "exporter": "torch.onnx.export(dynamo=False)",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "export_seconds": round(total, 2),
    }
    write_manifest(out, manifest)
    return manifest
