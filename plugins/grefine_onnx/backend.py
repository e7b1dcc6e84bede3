"""``OnnxSurgeryCLIP``: the CLIP Surgery encoders in ONNX Runtime, a
:class:`grefine_core.ClipBackbone` (registered as the ``onnx`` backbone).

It preprocesses and tokenises exactly like the torch backbone (``grefine_quality.pixels``,
open_clip's tokenizer) and runs the image, text and prompt graphs of an export made from it; the
PQ / AQ math (``grefine_quality``) is the same code whichever backbone feeds it. No torch CLIP
model is kept in memory.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from grefine_quality.constants import PQ_EOT_INDEX
from grefine_quality.ensemble import prompt_templates
from grefine_quality.pixels import clip_pixels
from grefine_quality.text_batches import encode_by_length, token_ids

from grefine_core.errors import ConfigError, InputError
from grefine_onnx.constants import ALL_PARTS
from grefine_onnx.manifest import check_export
from grefine_onnx.providers import PROVIDER_NAMES, SessionConfig
from grefine_onnx.session import OrtGraph

log = logging.getLogger("grefine.onnx")


class _Encoder:
    """Torch tensor in, torch float32 tensor out, on ``device``, through an :class:`OrtGraph`."""

    def __init__(self, graph: OrtGraph, device: torch.device):
        self.graph = graph
        self.device = device

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.graph(x)
        if isinstance(out, np.ndarray):
            out = torch.from_numpy(out)
        return out.to(self.device)


class _TextEncoder(_Encoder):
    def __init__(self, graph: OrtGraph, device: torch.device, context_length: int, width: int):
        super().__init__(graph, device)
        self.context_length = int(context_length)
        self.width = int(width)


class _PromptEncoder(_Encoder):
    def __init__(self, graph: OrtGraph, device: torch.device, eot_index: int):
        super().__init__(graph, device)
        self.eot_index = int(eot_index)


def trt_profiles(manifest: dict[str, Any], config: SessionConfig) -> dict[str, Any]:
    """TensorRT shape profiles (min / opt / max) of the dynamic graphs of an export."""
    if manifest.get("static"):
        return {}
    arch = manifest["architecture"]
    s, ctx = arch["image_size"], arch["context_length"]
    rows, width = arch["prompt_eot_index"] + 1, arch["text_width"]
    ib, tb = config.trt_max_image_batch, config.trt_max_text_batch
    return {
        "image": {
            "min": {"pixel_values": [1, 3, s, s]},
            "opt": {"pixel_values": [1, 3, s, s]},
            "max": {"pixel_values": [ib, 3, s, s]},
        },
        "text": {
            "min": {"token_ids": [1, 2]},
            "opt": {"token_ids": [min(tb, 128), 16]},
            "max": {"token_ids": [tb, ctx]},
        },
        "prompt_text": {
            "min": {"embeddings": [1, rows, width]},
            "opt": {"embeddings": [8, rows, width]},
            "max": {"embeddings": [max(8, ib), rows, width]},
        },
    }


class OnnxSurgeryCLIP:
    """The CLIP Surgery backbone whose image, text and prompt encoders run in ONNX Runtime.

    Build it with :meth:`from_export` on a folder written by
    :func:`grefine_onnx.export.export_clip` (or the cache, see :func:`grefine_onnx.load_onnx_clip`).

    :ivar export_dir: the export folder; :ivar manifest: its manifest;
    :ivar providers: the execution providers the sessions really run on;
    :ivar on_gpu: a TensorRT or CUDA provider is active.
    """

    def __init__(
        self,
        directory: str | Path,
        manifest: dict[str, Any],
        config: SessionConfig,
    ):
        from open_clip.tokenizer import SimpleTokenizer

        self.export_dir = Path(directory)
        self.manifest = manifest
        arch = manifest["architecture"]
        graphs = manifest["graphs"]
        missing = [p for p in ALL_PARTS if p not in graphs]
        if missing:
            raise ConfigError(
                f"the ONNX export in {self.export_dir} lacks the graph(s) {missing}; the ONNX "
                "backend needs image, text and prompt_text (re-export without --parts)"
            )
        profiles = trt_profiles(manifest, config)
        max_batch = {
            "image": config.trt_max_image_batch,
            "text": config.trt_max_text_batch,
            "prompt_text": None,
        }
        self.graphs: dict[str, OrtGraph] = {}
        for part in ALL_PARTS:
            self.graphs[part] = OrtGraph(
                self.export_dir / graphs[part]["file"],
                graphs[part],
                config,
                max_batch=max_batch[part] if _uses_trt(config) else None,
                profile=profiles.get(part) if _uses_trt(config) else None,
                what=f"{part} encoder",
            )
            # A provider one session could not start is not asked for again (one warning).
            active = self.graphs[part].providers
            kept = tuple(p for p in config.providers if PROVIDER_NAMES[p] in active or p == "cpu")
            if "cpu" not in kept:  # e.g. providers = ["cuda"] and CUDA did not start
                kept = (*kept, "cpu")
            if kept != config.providers:
                config = dataclasses.replace(config, providers=kept)
        image = self.graphs["image"]
        self.providers = image.providers
        self.on_gpu = image.on_gpu
        device = torch.device("cpu")
        if self.on_gpu and image.io_binding and torch.cuda.is_available():
            device = torch.device("cuda", int(config.device_id))
        self.model = None
        self.visual = _Encoder(image, device)
        self.visual_plain = None
        self.text = _TextEncoder(
            self.graphs["text"], device, arch["context_length"], arch["text_width"]
        )
        self.prompt_text = _PromptEncoder(
            self.graphs["prompt_text"], device, arch["prompt_eot_index"]
        )
        self.tokenizer = SimpleTokenizer(context_length=int(arch["context_length"]))
        self.templates = prompt_templates()
        #: Exported from a random-weight CLIP (``tiny``): PQ may use random prompts too.
        self.random_weights = manifest.get("source", {}).get("model") == "tiny"
        source = manifest.get("source", {}).get("description") or "CLIP"
        self.description = (
            f"ONNX ({manifest.get('dtype')}, {', '.join(self.providers)}) of {source}"
        )
        self.image_size = int(arch["image_size"])
        self.embed_dim = int(arch["embed_dim"])
        self.text_width = int(arch["text_width"])
        self.device = device
        self.dtype = torch.float32

    @classmethod
    def from_export(
        cls,
        directory: str | Path,
        config: SessionConfig | None = None,
        *,
        verify_files: bool = True,
    ) -> OnnxSurgeryCLIP:
        """Open the export in ``directory`` (its manifest and files are checked first).

        :raises ConfigError: no export there, or files that do not match the manifest.
        """
        check = check_export(directory, parts=ALL_PARTS, verify_files=verify_files)
        if not check.ok:
            raise ConfigError(
                f"cannot open the ONNX export in {directory}: {check.reason or check.status}; "
                "(re-)export it with `grefine export-onnx --model ... --out DIR`"
            )
        assert check.manifest is not None
        return cls(directory, check.manifest, config or SessionConfig())

    # ------------------------------------------------------------------ overrides

    def to(self, device: Any = "cpu", dtype: Any = "float32") -> OnnxSurgeryCLIP:
        """No-op when ``device`` / ``dtype`` are what the sessions already produce; the ONNX
        backend's device is chosen by its providers (``[plugins.onnx] providers``)."""
        if torch.device(device).type == self.device.type and str(dtype).endswith("float32"):
            return self
        raise ConfigError(
            f"the ONNX backend runs on {', '.join(self.providers)} and returns float32 on "
            f"{self.device}; choose the device with [plugins.onnx] providers and float16 with "
            "[plugins.onnx] fp16 instead of .to()"
        )

    def preprocess(self, image: Any, size: int | None = None) -> torch.Tensor:
        """The CLIP preprocessing (:func:`grefine_quality.pixels.clip_pixels`), as the torch
        backbone does it: float32 ``[1, 3, S, S]`` on the CPU."""
        return clip_pixels(image, int(size or self.image_size))

    def encode_image(self, pixel_values: torch.Tensor, surgery: bool = True) -> torch.Tensor:
        """Surgery tokens ``[B, 1 + g*g, D]`` (float32) from the ONNX image graph."""
        if not surgery:
            raise InputError(
                "the ONNX export holds the CLIP Surgery image encoder only (surgery=True)"
            )
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise InputError(f"pixel values must be [B, 3, H, W], got {tuple(pixel_values.shape)}")
        return self.visual(pixel_values.to(device=self.device, dtype=torch.float32)).float()

    def tokenize(self, texts: str | Sequence[str]) -> torch.Tensor:
        """CLIP BPE token ids ``[n, context_length]`` (long prompts truncated, EOT kept)."""
        return self.tokenizer([texts] if isinstance(texts, str) else list(texts))

    def encode_text(
        self, texts_or_tokens: str | Sequence[str] | torch.Tensor, *, cut: bool = True
    ) -> torch.Tensor:
        """Plain CLIP text features ``[n, D]`` from the ONNX text graph (float32, not normalised).

        :param cut: cut the sequences after the longest end-of-text token (exact under the causal
            mask); False runs all ``context_length`` positions.
        """
        tokens = token_ids(texts_or_tokens, self.tokenize, cut)
        return self.text(tokens.to(self.device)).float()

    def encode_texts(self, texts: Sequence[str], max_tokens: int = 8192) -> torch.Tensor:
        """Features ``[n, D]`` of ``texts`` as given, in length-sorted chunks of the text graph."""
        tokens = self.tokenize(list(texts))
        return encode_by_length(tokens, self.text, self.embed_dim, self.device, max_tokens)

    def encode_prompt_embeddings(
        self, embeddings: torch.Tensor, eot_index: int = PQ_EOT_INDEX
    ) -> torch.Tensor:
        """Features ``[B, D]`` of learned prompt embeddings ``[B, L, W]`` through the ONNX prompt
        graph (only the rows up to ``eot_index`` are fed)."""
        if int(eot_index) != self.prompt_text.eot_index:
            raise InputError(
                f"the ONNX prompt graph was exported for an end-of-text row {self.prompt_text.eot_index}, "
                f"got {eot_index}"
            )
        if embeddings.ndim != 3 or embeddings.shape[2] != self.text_width:
            raise InputError(
                f"prompt embeddings must be [B, L, {self.text_width}] for this CLIP's text tower, "
                f"got {tuple(embeddings.shape)}"
            )
        x = embeddings[:, : eot_index + 1].to(device=self.device, dtype=torch.float32)
        return self.prompt_text(x).float()

    def __repr__(self) -> str:
        return (
            f"OnnxSurgeryCLIP({self.export_dir}, providers={self.providers}, "
            f"dtype={self.manifest.get('dtype')}, static={self.manifest.get('static')})"
        )


def _uses_trt(config: SessionConfig) -> bool:
    return "tensorrt" in config.providers
