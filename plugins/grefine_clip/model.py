"""``SurgeryCLIP``: the CLIP Surgery backbone shared by the PQ and AQ indicators (docs/indicators.md)."""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from grefine_clip import loading, ops
from grefine_clip.constants import CLIP_MEAN, CLIP_STD, PQ_EOT_INDEX, SURGERY_LAYERS
from grefine_clip.images import resize_to_rgb
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


def prompt_templates() -> list[str]:
    """The 85 prompt-ensemble templates (``{}`` = the class text), in the reference order."""
    text = (resources.files("grefine_clip") / "prompt_templates.json").read_text("utf-8")
    return list(json.loads(text)["templates"])


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ConfigError(f"unknown dtype {dtype!r}; valid: {', '.join(_DTYPES)}") from None


class TextFeatureCache:
    """A thread-safe LRU cache of normalised ensemble text features, keyed by text."""

    def __init__(self, max_size: int = 4096):
        self.max_size = int(max_size)
        self._items: OrderedDict[Any, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Any) -> torch.Tensor | None:
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: Any, value: torch.Tensor) -> None:
        if self.max_size <= 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.max_size:
                self._items.popitem(last=False)

    def resize(self, max_size: int) -> None:
        with self._lock:
            self.max_size = int(max_size)
            while len(self._items) > max(self.max_size, 0):
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._items)


class SurgeryCLIP:
    """CLIP with the CLIP Surgery image encoder, the text tower and the prompt ensemble.

    Build it with :meth:`from_openai_state_dict`, :meth:`from_pretrained` or :meth:`tiny`.

    :ivar model: the wrapped open_clip ``CLIP`` (parameters shared with the modules below).
    :ivar visual: :class:`~grefine_clip.modules.SurgeryVisionEncoder` (pixels -> surgery tokens).
    :ivar visual_plain: the same tower without surgery (plain CLIP tokens).
    :ivar text: :class:`~grefine_clip.modules.TextEncoder` (token ids -> features).
    :ivar prompt_text: :class:`~grefine_clip.modules.EmbeddingTextEncoder` (PQ embeddings -> features).
    :ivar templates: the prompt-ensemble templates.
    :ivar text_cache: LRU cache of ensemble text features.
    """

    def __init__(self, model: nn.Module, *, description: str = "", text_cache_size: int = 4096):
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
        self.text_cache = TextFeatureCache(text_cache_size)
        self.description = description
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
        return cls(
            loading.build_clip(TINY_CONFIG, seed=seed),
            description=f"tiny random CLIP (seed {seed})",
        )

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
        if dt != self.dtype or dev != self.device:
            self.text_cache.clear()
        self.device, self.dtype = dev, dt
        return self

    # ------------------------------------------------------------------ image side

    def preprocess(self, image: Any, size: int | None = None) -> torch.Tensor:
        """The CLIP preprocessing of docs/indicators.md: bicubic resize straight to ``size`` (default: the model's input
        size), RGB, /255, CLIP mean/std -> float32 ``[1, 3, size, size]`` on the CPU.

        :param image: PIL image of any mode (grayscale, RGBA, 16-bit...) or numpy array.
        """
        side = int(size or self.image_size)
        rgb = resize_to_rgb(image, side)
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)
        x = x.float().div(255)
        mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(CLIP_STD, dtype=torch.float32).view(3, 1, 1)
        return x.sub_(mean).div_(std).unsqueeze(0)

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

    @staticmethod
    def normalise_tokens(tokens: torch.Tensor, compat: str = "paper") -> torch.Tensor:
        """Per-token L2 normalisation (``compat="reference"``: over the token axis)."""
        return ops.normalise_tokens(tokens, compat)  # type: ignore[arg-type]

    @staticmethod
    def similarity_map(scores: Any, size: tuple[int, int]) -> Any:
        """Patch similarities ``[B, N-1, K]`` -> maps ``[B, H, W, K]`` (torch in, torch out;
        numpy in, numpy out)."""
        if isinstance(scores, np.ndarray):
            return ops.similarity_map(torch.from_numpy(scores), size).numpy()
        return ops.similarity_map(scores, size)

    @staticmethod
    def feature_surgery(
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        redundant: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Feature surgery similarities ``[B, N, K]`` (see :func:`grefine_clip.ops.feature_surgery`)."""
        return ops.feature_surgery(image_features, text_features, redundant)

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
        tokens = (
            texts_or_tokens
            if isinstance(texts_or_tokens, torch.Tensor)
            else self.tokenize(texts_or_tokens)
        )
        if cut:
            tokens = tokens[:, : int(tokens.argmax(dim=-1).max()) + 1]
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

    def _template_key(self, templates: Sequence[str]) -> Any:
        return None if list(templates) == self.templates else tuple(templates)

    @torch.inference_mode()
    def encode_text_ensemble(
        self,
        texts: str | Sequence[str],
        templates: Sequence[str] | None = None,
        *,
        use_cache: bool = True,
        max_tokens: int = 8192,
    ) -> torch.Tensor:
        """Prompt-ensemble features ``[n, D]``, normalised (docs/indicators.md):
        ``T_c = normalise(mean_j normalise(encode_text(template_j(c))))``.

        All uncached texts go through the text tower in one batched pass: their template
        sequences are sorted by length and run in chunks of at most ``max_tokens`` tokens, each
        cut after its longest end-of-text token. Results are kept in :attr:`text_cache`.

        :param templates: default: the 85 reference templates.
        :param use_cache: read and fill the LRU cache.
        """
        if isinstance(texts, str):
            texts = [texts]
        texts = [str(t) for t in texts]
        templates = list(templates) if templates is not None else self.templates
        key_t = self._template_key(templates)
        found: dict[str, torch.Tensor] = {}
        if use_cache:
            for t in dict.fromkeys(texts):
                hit = self.text_cache.get((key_t, t))
                if hit is not None:
                    found[t] = hit
        todo = [t for t in dict.fromkeys(texts) if t not in found]
        if todo:
            feats = self._ensemble_uncached(todo, templates, max_tokens)
            for t, f in zip(todo, feats, strict=True):
                found[t] = f
                if use_cache:
                    self.text_cache.put((key_t, t), f)
        if not texts:
            return torch.zeros((0, self.embed_dim), device=self.device)
        return torch.stack([found[t] for t in texts])

    def _ensemble_uncached(
        self, texts: list[str], templates: list[str], max_tokens: int
    ) -> torch.Tensor:
        n_tmpl = len(templates)
        strings = [tmpl.replace("{}", t) for t in texts for tmpl in templates]
        tokens = self.tokenize(strings)
        lengths = tokens.argmax(dim=-1) + 1
        order = torch.argsort(lengths, stable=True)
        feats = torch.empty((len(strings), self.embed_dim), dtype=torch.float32, device=self.device)
        start = 0
        while start < len(strings):
            # Grow the chunk while (rows x longest length) stays within the token budget.
            end = start + 1
            while end < len(strings) and (end + 1 - start) * int(lengths[order[end]]) <= max_tokens:
                end += 1
            idx = order[start:end]
            chunk = tokens[idx, : int(lengths[idx].max())]
            feats[idx.to(self.device)] = self.text(chunk.to(self.device)).float()
            start = end
        feats = feats / feats.norm(dim=-1, keepdim=True)
        mean = feats.reshape(len(texts), n_tmpl, -1).mean(1)
        return mean / mean.norm(dim=-1, keepdim=True)

    def redundant_feature(self) -> torch.Tensor:
        """The redundant feature ``R = T_""`` ``[1, D]`` (ensemble of the empty string)."""
        return self.encode_text_ensemble([""])

    def __repr__(self) -> str:
        return (
            f"SurgeryCLIP({self.description or 'custom'}, image_size={self.image_size}, "
            f"embed_dim={self.embed_dim}, device={self.device}, dtype={self.dtype})"
        )
