"""The prompt ensemble of docs/indicators.md, on any backbone: a text's feature is
``T_c = normalise(mean_j normalise(encode_texts(template_j(c))))`` over the backbone's
templates, kept in an LRU cache per backbone. The redundant feature ``R = T_""`` is the
ensemble of the empty string.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from importlib import resources
from typing import Any

import torch


def prompt_templates() -> list[str]:
    """The 85 prompt-ensemble templates (``{}`` = the class text), in the reference order."""
    text = (resources.files("grefine_quality") / "prompt_templates.json").read_text("utf-8")
    return list(json.loads(text)["templates"])


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


class TextEnsemble:
    """Ensemble text features of one backbone (:class:`grefine_core.ClipBackbone`), cached.

    :param backbone: where the texts are encoded (``encode_texts``, ``templates``).
    :param cache_size: LRU size of :attr:`cache` (0 keeps nothing).
    """

    def __init__(self, backbone: Any, cache_size: int = 4096):
        self.backbone = backbone
        self.cache = TextFeatureCache(cache_size)

    @property
    def templates(self) -> list[str]:
        """The backbone's templates (the default of :meth:`encode`)."""
        return list(self.backbone.templates)

    @torch.inference_mode()
    def encode(
        self,
        texts: str | Sequence[str],
        templates: Sequence[str] | None = None,
        *,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Ensemble features ``[n, D]``, normalised, on the backbone's device.

        Each uncached text's template strings go to the backbone in one ``encode_texts`` call
        of their own (it batches them). Results are kept in :attr:`cache`.

        :param templates: default: the backbone's (the 85 reference templates for a CLIP).
        :param use_cache: read and fill the LRU cache.
        """
        if isinstance(texts, str):
            texts = [texts]
        texts = [str(t) for t in texts]
        templates = list(templates) if templates is not None else self.templates
        key_t = None if templates == self.templates else tuple(templates)
        found: dict[str, torch.Tensor] = {}
        if use_cache:
            for t in dict.fromkeys(texts):
                hit = self.cache.get((key_t, t))
                if hit is not None:
                    found[t] = hit
        todo = [t for t in dict.fromkeys(texts) if t not in found]
        # One call per text: a text's features never depend on which other texts happened to
        # be uncached with it (batch composition shifts the last float bits), so an item's
        # result is the same whatever ran before it in this process (resume, engines).
        for t in todo:
            feats = self.backbone.encode_texts([tmpl.replace("{}", t) for tmpl in templates])
            feats = feats.float()
            feats = feats / feats.norm(dim=-1, keepdim=True)
            mean = feats.mean(0)
            found[t] = mean / mean.norm()
            if use_cache:
                self.cache.put((key_t, t), found[t])
        if not texts:
            return torch.zeros((0, int(self.backbone.embed_dim)), device=self.backbone.device)
        return torch.stack([found[t] for t in texts])

    def redundant(self) -> torch.Tensor:
        """The redundant feature ``R = T_""`` ``[1, D]`` (ensemble of the empty string)."""
        return self.encode([""])
