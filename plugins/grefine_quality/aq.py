"""AQ-Map, the alignment quality indicator: the CLIP side (docs/indicators.md).

For a parsed prompt, every phrase text, head noun and the whole prompt are encoded through the
85-template ensemble, one batched text pass per text (cached), the empty-string feature ``R`` is
subtracted (feature surgery), and each text gets a score ``sigmoid(10 * S[cls])`` and a map
``sim_map(S[1:])``. The defect logic (docs/indicators.md) lives in :mod:`grefine_quality.aq_logic`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from grefine_core.backbone import ClipBackbone
from grefine_core.errors import ConfigError, InputError
from grefine_core.types import AlignmentResult, ParsedPrompt
from grefine_quality import ops
from grefine_quality.aq_logic import resolve_alignment, scored_indices
from grefine_quality.ensemble import TextEnsemble

#: ``score = sigmoid(SCORE_SCALE * S[cls])`` (released AQ-Map code).
SCORE_SCALE = 10.0
#: CLIP's text window (start and end tokens included).
CLIP_WINDOW = 77
log = logging.getLogger("grefine.quality")


class AlignmentQuality:
    """AQ-Map (docs/indicators.md): per-phrase alignment scores and maps, the defect map and the score ``a``.

    :param clip: the backbone (:class:`grefine_core.ClipBackbone`, shared with PQ).
    :param merge: ``"paper"`` (product of the used maps) or ``"union"`` (max, released code).
    :param a_bound: noun-missing threshold on the noun score.
    :param beta: cask threshold of the score (Eq. 8).
    :param emphasis_weight: ``w``: defective phrases get weight ``1 + w`` in the stage-1 prompt.
    :param compat: ``"paper"`` normalises image tokens per token; ``"reference"`` over the token
        axis like the released code.
    :param text_cache_size: LRU size of the ensemble text-feature cache (:attr:`texts`).
    :param max_phrases: score at most this many phrases with a noun (the first ones); the rest are
        dropped with a warning (a 5,000-character prompt would otherwise give hundreds of maps).
    """

    def __init__(
        self,
        clip: ClipBackbone,
        merge: str = "paper",
        a_bound: float = 0.5,
        beta: float = 0.5,
        *,
        emphasis_weight: float = 0.1,
        compat: str = "paper",
        text_cache_size: int = 4096,
        max_phrases: int = 32,
    ):
        if merge not in ("paper", "union"):
            raise ConfigError(f"AQ merge must be 'paper' or 'union', got {merge!r}")
        if compat not in ("paper", "reference"):
            raise ConfigError(f"AQ compat must be 'paper' or 'reference', got {compat!r}")
        if not beta > 0:
            raise ConfigError(f"AQ beta must be > 0, got {beta!r}")
        if not emphasis_weight >= 0:
            raise ConfigError(f"AQ emphasis_weight must be >= 0, got {emphasis_weight!r}")
        self.clip = clip
        self.merge = merge
        self.a_bound = float(a_bound)
        self.beta = float(beta)
        self.emphasis_weight = float(emphasis_weight)
        self.compat = compat
        self.max_phrases = int(max_phrases)
        self.texts = TextEnsemble(clip, text_cache_size)

    def texts_of(self, parsed: ParsedPrompt) -> tuple[list[str], list[str], str]:
        """``(phrase texts, noun texts, prompt)`` of the phrases with a noun, in order."""
        scored = [parsed.phrases[i] for i in scored_indices(parsed.phrases)]
        return [p.text for p in scored], [str(p.noun) for p in scored], parsed.prompt

    def text_features(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Ensemble features of ``texts`` ``[K, D]`` and the redundant feature ``[1, D]``, one
        batched text pass per uncached text (so a text's features never depend on the others)."""
        feats = self.texts.encode([*texts, ""])
        return feats[:-1], feats[-1:]

    def surgery_scores(
        self,
        tokens: torch.Tensor,
        texts: Sequence[str],
        size: tuple[int, int],
        map_indices: Sequence[int] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores ``[K]`` (``sigmoid(10 S[cls])``) and maps ``[M, H, W]`` of ``texts`` for one
        image's raw surgery tokens ``[1, N, D]``.

        :param map_indices: which texts get a map (default: all).
        """
        text, redundant = self.text_features(texts)
        fn = ops.normalise_tokens(tokens.float(), self.compat)  # type: ignore[arg-type]
        sims = ops.feature_surgery(fn, text.to(fn.device), redundant.to(fn.device))  # [1, N, K]
        scores = torch.sigmoid(SCORE_SCALE * sims[0, 0]).cpu().numpy().astype(np.float64)
        patch = sims[:, 1:]
        if map_indices is not None:
            patch = patch[:, :, list(map_indices)]
        if patch.shape[2] == 0:
            return scores, np.zeros((0, int(size[0]), int(size[1])), np.float32)
        maps = ops.similarity_map(patch, size)[0].permute(2, 0, 1)
        return scores, np.ascontiguousarray(maps.cpu().numpy(), dtype=np.float32)

    def from_tokens(
        self, tokens: torch.Tensor, parsed: ParsedPrompt, size: tuple[int, int]
    ) -> AlignmentResult:
        """The alignment result for already encoded image tokens ``[1, N, D]`` and map size
        ``(H, W)``."""
        if not isinstance(parsed, ParsedPrompt):
            raise InputError(f"expected a ParsedPrompt, got {type(parsed).__name__}")
        parsed, info = self._within_limits(parsed)
        phrase_texts, noun_texts, prompt = self.texts_of(parsed)
        mapped = list(dict.fromkeys([*phrase_texts, *noun_texts]))
        unique = [*mapped, prompt] if prompt not in mapped else mapped
        scores, maps = self.surgery_scores(tokens, unique, size, range(len(mapped)))
        pos = {t: i for i, t in enumerate(unique)}
        ph = [pos[t] for t in phrase_texts]
        nn_ = [pos[t] for t in noun_texts]
        h, w = int(size[0]), int(size[1])
        result = resolve_alignment(
            parsed,
            scores[ph],
            scores[nn_],
            maps[ph] if ph else np.zeros((0, h, w), np.float32),
            maps[nn_] if nn_ else np.zeros((0, h, w), np.float32),
            float(scores[pos[prompt]]),
            prompt,
            merge=self.merge,
            a_bound=self.a_bound,
            beta=self.beta,
            emphasis_weight=self.emphasis_weight,
            shape=(h, w),
        )
        result.info.update(info)
        return result

    def _within_limits(self, parsed: ParsedPrompt) -> tuple[ParsedPrompt, dict[str, Any]]:
        """The parse with phrases past :attr:`max_phrases` left unscored (noun removed), and what
        the report should say: dropped phrases, a prompt longer than CLIP's 77-token window."""
        info: dict[str, Any] = {}
        tokenizer = getattr(self.clip, "tokenizer", None)
        if tokenizer is not None and hasattr(tokenizer, "encode"):
            n = len(tokenizer.encode(parsed.prompt))
            info["prompt_tokens"] = n
            if n > CLIP_WINDOW - 2:
                log.warning(
                    "AQ: the prompt has %d CLIP tokens; CLIP reads 77 (75 + start and end), so "
                    "the whole-prompt score sees only its start (each phrase is encoded on its "
                    "own)",
                    n,
                )
        scored = scored_indices(parsed.phrases)
        if len(scored) <= self.max_phrases:
            return parsed, info
        keep = set(scored[: self.max_phrases])
        phrases = [
            p if i in keep or p.noun is None else replace(p, noun=None, noun_span=None)
            for i, p in enumerate(parsed.phrases)
        ]
        info["phrases_dropped"] = len(scored) - self.max_phrases
        log.warning(
            "AQ: the prompt has %d phrases with a noun; only the first %d are scored "
            "([plugins.aq] max_phrases), %d dropped",
            len(scored),
            self.max_phrases,
            len(scored) - self.max_phrases,
        )
        return replace(parsed, phrases=phrases), info

    def __call__(
        self, image: Any, parsed: ParsedPrompt, tokens: torch.Tensor | None = None
    ) -> AlignmentResult:
        """Assess how well ``image`` matches the parsed prompt.

        :param image: PIL image (any mode).
        :param parsed: the parser's output.
        :param tokens: the image's surgery tokens ``[1, N, D]`` when already encoded (PQ shares
            them through the run context).
        :returns: an :class:`~grefine_core.types.AlignmentResult` (maps of shape (H, W)).
        """
        from grefine_quality.pixels import as_pil

        pil = as_pil(image)
        if tokens is None:
            tokens = self.clip.encode_image(self.clip.preprocess(pil))
        return self.from_tokens(tokens, parsed, (pil.height, pil.width))
