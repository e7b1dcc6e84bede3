"""``SurgeryCLIP``: the CLIP Surgery backbone (torch) that the PQ and AQ indicators run on
(docs/indicators.md). It implements :class:`grefine_core.ClipBackbone`; the indicators' math
(prompt ensemble, feature surgery, maps) lives in ``grefine_quality``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from grefine_quality.constants import PQ_EOT_INDEX
from grefine_quality.ensemble import prompt_templates
from grefine_quality.pixels import clip_pixels
from grefine_quality.text_batches import encode_by_length, token_ids
from torch import nn

from grefine_clip import loading
from grefine_clip.constants import SURGERY_LAYERS
from grefine_clip.modules import EmbeddingTextEncoder, SurgeryVisionEncoder, TextEncoder
from grefine_core.errors import ConfigError, InputError

log = logging.getLogger("grefine.clip")

#: OpenAI CLIP ViT-B/16 (for building the real architecture with random weights in tests/benchmarks).
VIT_B_16_CONFIG: dict[str, int] = {
    "embed_dim": 512,
    "vision_width": 768,
    "vision_layers": 12,
    "vision_heads": 12,
    "patch_size": 16,
    "image_size": 224,
    "context_length": 77,
    "vocab_size": 49408,
    "text_width": 512,
    "text_heads": 8,
    "text_layers": 12,
}

#: Architecture of :meth:`SurgeryCLIP.tiny` (same shapes as the shared fixture's tiny CLIP).
TINY_CONFIG: dict[str, int] = {
    "embed_dim": 96,
    "vision_width": 128,
    "vision_layers": 7,
    "vision_heads": 2,
    "patch_size": 16,
    "image_size": 224,
    "context_length": 77,
    "vocab_size": 49408,
    "text_width": 512,
    "text_heads": 8,
    "text_layers": 1,
}

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ConfigError(f"unknown dtype {dtype!r}; valid: {', '.join(_DTYPES)}") from None


class SurgeryCLIP:
    """CLIP with the CLIP Surgery image encoder and the text tower: a
    :class:`grefine_core.ClipBackbone`.

    Build it with :meth:`from_openai_state_dict`, :meth:`from_pretrained` or :meth:`tiny`.

    :ivar model: the wrapped open_clip ``CLIP`` (parameters shared with the modules below).
    :ivar visual: :class:`~grefine_clip.modules.SurgeryVisionEncoder` (pixels -> surgery tokens).
    :ivar visual_plain: the same tower without surgery (plain CLIP tokens).
    :ivar text: :class:`~grefine_clip.modules.TextEncoder` (token ids -> features).
    :ivar prompt_text: :class:`~grefine_clip.modules.EmbeddingTextEncoder` (PQ embeddings -> features).
    :ivar templates: the prompt-ensemble templates (the 85 of the reference).
    """

    def __init__(self, model: nn.Module, *, description: str = ""):
        from open_clip.tokenizer import SimpleTokenizer

        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.visual = SurgeryVisionEncoder(model.visual, SURGERY_LAYERS, surgery=True).eval()
        self.visual_plain = SurgeryVisionEncoder(model.visual, SURGERY_LAYERS, surgery=False).eval()
        self.text = TextEncoder(model).eval()
        self.prompt_text = EmbeddingTextEncoder(self.text, PQ_EOT_INDEX).eval()
        self.tokenizer = SimpleTokenizer(context_length=self.text.context_length)
        self.templates = prompt_templates()
        self.description = description
        #: Random weights (:meth:`tiny`): the PQ prompts may then be random too (``random_fallback``).
        self.random_weights = False
        self.image_size = self.visual.image_size
        self.embed_dim = int(self.visual.proj.shape[1])
        self.text_width = self.text.width
        self.device = torch.device("cpu")
        self.dtype = torch.float32

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_openai_state_dict(cls, state_dict: dict[str, torch.Tensor]) -> SurgeryCLIP:
        """Build from a state dict with OpenAI CLIP key names (ViT only, >= 6 vision layers).

        :raises InputError: missing or mis-shaped keys, ResNet CLIPs, < 6 vision layers.
        """
        return cls(loading.clip_from_state_dict(state_dict), description="OpenAI-format state dict")

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        pretrained: str = "openai",
        *,
        cache_dir: str | None = None,
    ) -> SurgeryCLIP:
        """Build from an open_clip model name + pretrained tag, a local weights file or folder.

        :param name_or_path: ``"tiny"``; a path to an OpenAI-format ``.pt``/``.pth``/``.bin``/
            ``.safetensors`` file (OpenAI's TorchScript ``ViT-B-16.pt`` works) or a folder holding
            one; or an open_clip model name such as ``"ViT-B-16-quickgelu"``.
        :param pretrained: open_clip pretrained tag (or weights file) for a model name; ignored
            for ``tiny`` and for paths.
        :param cache_dir: open_clip / Hugging Face cache folder for named models.
        :raises MissingWeightsError: named weights that are neither cached nor downloadable.
        """
        name = str(name_or_path)
        if name == "tiny":
            return cls.tiny()
        if name == "oracle":
            raise ConfigError(
                "[plugins.clip] model = 'oracle' is the planted-truth backbone, not a CLIP: it has "
                "no weights, no ONNX export and no ONNX backend; use it with the clip_pq/clip_aq "
                "plugins (--preset oracle)"
            )
        path = Path(name).expanduser()
        if path.exists():
            file = loading.find_weights_file(path) if path.is_dir() else path
            sd = loading.read_state_dict_file(file)
            return cls(loading.clip_from_state_dict(sd), description=str(file))
        if any(sep in name for sep in ("/", "\\")) or name.endswith(
            (".pt", ".pth", ".bin", ".safetensors")
        ):
            from grefine_core.errors import MissingWeightsError

            raise MissingWeightsError(
                f"CLIP weights path {name!r} does not exist; put an OpenAI-format ViT CLIP file "
                "there (e.g. OpenAI's ViT-B-16.pt) or use an open_clip name such as "
                "'ViT-B-16-quickgelu' with pretrained='openai'"
            )
        model = loading.open_clip_model(name, pretrained, cache_dir)
        return cls(model, description=f"open_clip {name} / {pretrained}")

    @classmethod
    def tiny(cls, seed: int = 0) -> SurgeryCLIP:
        """A tiny random CLIP built in code (7 vision layers of width 128, one text layer of width
        512 so the real PQ prompts fit). Same ``seed``, same weights. Proves plumbing only."""
        clip = cls(
            loading.build_clip(TINY_CONFIG, seed=seed),
            description=f"tiny random CLIP (seed {seed})",
        )
        clip.random_weights = True
        return clip

    def to(
        self, device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32"
    ) -> SurgeryCLIP:
        """Move to ``device`` and cast to ``dtype`` (in place); returns ``self``."""
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device 'cuda' was requested but torch.cuda.is_available() is False")
        dt = resolve_dtype(dtype)
        for module in (self.model, self.visual, self.visual_plain, self.text, self.prompt_text):
            module.to(device=dev, dtype=dt)
        self.device, self.dtype = dev, dt
        return self

    # ------------------------------------------------------------------ image side

    def preprocess(self, image: Any, size: int | None = None) -> torch.Tensor:
        """The CLIP preprocessing of docs/indicators.md (:func:`grefine_quality.pixels.clip_pixels`):
        float32 ``[1, 3, size, size]`` on the CPU (default size: the model's input size).

        :param image: PIL image of any mode (grayscale, RGBA, 16-bit...) or numpy array.
        """
        return clip_pixels(image, int(size or self.image_size))

    @torch.inference_mode()
    def encode_image(self, pixel_values: torch.Tensor, surgery: bool = True) -> torch.Tensor:
        """Image tokens ``[B, 1 + g*g, D]`` (float32, not normalised); row 0 = CLIP's image
        embedding.

        :param surgery: False gives plain CLIP tokens (no dual path, no class-token swap).
        """
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise InputError(f"pixel values must be [B, 3, H, W], got {tuple(pixel_values.shape)}")
        encoder = self.visual if surgery else self.visual_plain
        x = pixel_values.to(device=self.device, dtype=self.dtype)
        return encoder(x).float()

    # ------------------------------------------------------------------ text side

    def tokenize(self, texts: str | Sequence[str]) -> torch.Tensor:
        """CLIP BPE token ids ``[n, context_length]`` (long prompts truncated, EOT kept)."""
        if isinstance(texts, str):
            texts = [texts]
        return self.tokenizer(list(texts))

    @torch.inference_mode()
    def encode_text(
        self, texts_or_tokens: str | Sequence[str] | torch.Tensor, *, cut: bool = True
    ) -> torch.Tensor:
        """Plain CLIP text features ``[n, D]`` (float32, not normalised).

        :param cut: cut the sequences after the longest end-of-text token (exact under the causal
            mask); False runs all ``context_length`` positions like the reference.
        """
        tokens = token_ids(texts_or_tokens, self.tokenize, cut)
        return self.text(tokens.to(self.device)).float()

    @torch.inference_mode()
    def encode_prompt_embeddings(
        self, embeddings: torch.Tensor, eot_index: int = PQ_EOT_INDEX
    ) -> torch.Tensor:
        """Features ``[B, D]`` (float32, not normalised) of learned prompt embeddings
        ``[B, L, W]``; only rows up to ``eot_index`` are run (exact under the causal mask)."""
        if embeddings.ndim != 3 or embeddings.shape[2] != self.text_width:
            raise InputError(
                f"prompt embeddings must be [B, L, {self.text_width}] for this CLIP's text tower, "
                f"got {tuple(embeddings.shape)}"
            )
        encoder = self.prompt_text
        if eot_index != encoder.eot_index:
            encoder = EmbeddingTextEncoder(self.text, eot_index)
        x = embeddings[:, : eot_index + 1].to(device=self.device, dtype=self.dtype)
        return encoder(x).float()

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str], max_tokens: int = 8192) -> torch.Tensor:
        """Features ``[n, D]`` (float32, not normalised) of ``texts`` as given, in one batched
        pass: sequences sorted by length, chunks of at most ``max_tokens`` tokens, each cut
        after its longest end-of-text token (:func:`grefine_quality.text_batches.encode_by_length`)."""
        tokens = self.tokenize(list(texts))
        return encode_by_length(tokens, self.text, self.embed_dim, self.device, max_tokens)

    def onnx_graphs(self, trim_last_block: bool = True) -> dict[str, nn.Module]:
        """The exportable encoders ``{"image", "text", "prompt_text"}``: tensor in, float32 tensor
        out (:mod:`grefine_clip.export_graphs`); what ``grefine_onnx`` exports."""
        from grefine_clip.export_graphs import ImageGraph, PromptTextGraph, TextGraph

        return {
            "image": ImageGraph(self.visual, trim_last_block),
            "text": TextGraph(self.text, trim_last_block),
            "prompt_text": PromptTextGraph(self.prompt_text, trim_last_block),
        }

    def __repr__(self) -> str:
        return (
            f"SurgeryCLIP({self.description or 'custom'}, image_size={self.image_size}, "
            f"embed_dim={self.embed_dim}, device={self.device}, dtype={self.dtype})"
        )
