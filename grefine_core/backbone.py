"""The CLIP-shaped backbone that the PQ and AQ indicators run on, as a typed protocol.

A backbone plugin implements it and registers a factory with the ``grefine_backbones`` hook; the
indicators (``grefine_quality``) find it by name (``context.backbone(name)``) and never import a
backend. Three ship with grefine: ``clip`` (the torch CLIP Surgery model, ``grefine_clip``),
``onnx`` (the same encoders in ONNX Runtime, ``grefine_onnx``) and ``oracle`` (the planted-truth
backbone of docs/behaviour.md, ``grefine_clip``). Tensors are torch tensors; the protocol
itself imports no torch.

Optional members an indicator uses when present: ``notes(image) -> dict`` (added to the PQ
report) and ``planted_pq_prompts() -> {factor: tensor}`` (stand-in PQ prompts, no files).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class ClipBackbone(Protocol):
    """What PQ-Map and AQ-Map need from a CLIP (docs/indicators.md).

    :ivar description: one line naming the model, for reports and logs.
    :ivar image_size: the square input side of :meth:`preprocess`.
    :ivar embed_dim: ``D``, the width of image tokens and text features.
    :ivar text_width: ``W``, the width of the token embeddings (of the PQ prompt embeddings).
    :ivar templates: the prompt-ensemble templates (``{}`` = the text) its text features are
        averaged over; ``("{}",)`` for a backbone whose text features need no ensemble.
    :ivar device: where its outputs are (a ``torch.device``).
    """

    description: str
    image_size: int
    embed_dim: int
    text_width: int
    templates: Sequence[str]
    device: Any

    def preprocess(self, image: Any) -> Any:
        """A PIL image (any mode) -> the input of :meth:`encode_image` (``[1, 3, S, S]`` for a
        CLIP)."""

    def encode_image(self, pixel_values: Any) -> Any:
        """Inputs ``[B, ...]`` -> CLIP Surgery image tokens ``[B, 1 + g*g, D]`` (float32, not
        normalised); row 0 is the image embedding, the others the ``g x g`` patches."""

    def encode_texts(self, texts: Sequence[str]) -> Any:
        """Texts as given (no template) -> text features ``[n, D]`` (float32, not normalised)."""

    def encode_prompt_embeddings(self, embeddings: Any, eot_index: int) -> Any:
        """Learned prompt embeddings ``[B, L, W]`` -> features ``[B, D]`` (float32, not
        normalised), read at the end-of-text row ``eot_index``."""
